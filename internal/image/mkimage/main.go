// Command mkimage writes the hostroute image: every FILE argument at the image root
// (mode 0755, owner 0:0, fixed mtime), as a docker-archive tarball, an OCI layout and
// a digest file under -out. It prints the manifest digest and the reference.
//
// It lives outside cmd/ because `go build ./cmd/...` builds every command there into
// the image.
//
//	mkimage -out bin/image -ref hostroute/hostroute:dev -arch amd64 bin/image/rootfs/*
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hostroute/hostroute/internal/image"
)

func main() {
	out := flag.String("out", "bin/image", "output directory: hostroute.tar, oci/, digest")
	ref := flag.String("ref", "hostroute/hostroute:dev", "image reference (tag) written into the tarball")
	arch := flag.String("arch", "amd64", "image architecture (GOARCH of the binaries)")
	entrypoint := flag.String("entrypoint", "/hostroute-node", "image entrypoint")
	flag.Parse()
	if err := run(*out, *ref, *arch, *entrypoint, flag.Args()); err != nil {
		slog.Error("mkimage", "err", err)
		os.Exit(1)
	}
}

func run(out, ref, arch, entrypoint string, paths []string) error {
	created, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	img, err := image.Build(image.FilesFromPaths(0o755, paths...), image.Config{
		Entrypoint: []string{entrypoint},
		// The binaries sit at the root: `kubectl exec ... -- routectl status` finds them.
		Env:          []string{"PATH=/"},
		OS:           "linux",
		Architecture: arch,
		Created:      created,
	})
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	tarPath := filepath.Join(out, "hostroute.tar")
	if err := image.WriteTarball(tarPath, ref, img); err != nil {
		return err
	}
	if err := image.WriteLayout(filepath.Join(out, "oci"), ref, img); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "digest"), []byte(digest.String()+"\n"), 0o644); err != nil {
		return err
	}
	size, err := image.Size(img)
	if err != nil {
		return err
	}
	st, err := os.Stat(tarPath)
	if err != nil {
		return err
	}
	// The image ID (config digest) is what a runtime shows after importing the
	// tarball; its manifest digest there differs, as a docker archive has none.
	id, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("image ID: %w", err)
	}
	slog.Info("image written", "dir", out, "files", len(paths), "image_bytes", size, "tarball_bytes", st.Size(), "image_id", id.String())
	fmt.Println(digest.String())
	fmt.Println(ref)
	return nil
}

// sourceDateEpoch reads the reproducible-builds convention: unset means the Unix
// epoch (the library's default), so the digest depends on the source alone.
func sourceDateEpoch(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: not a non-negative number of seconds", v)
	}
	return time.Unix(secs, 0), nil
}
