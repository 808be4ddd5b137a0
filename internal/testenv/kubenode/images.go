package kubenode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hostroute/hostroute/internal/image"
	"github.com/hostroute/hostroute/internal/testenv"
)

// Image references of the lab's own images. They name no registry anyone could
// serve (".test" is reserved), so a pull attempt fails at once instead of
// fetching something else; pods use imagePullPolicy: Never.
const (
	PauseImage   = "hostroute.test/pause:1"
	TestAppImage = "hostroute.test/testapp:1"
)

// BuildStatic compiles the package pkg (an import path of this module) as a
// static binary (no cgo, so the image needs no libc) into out.
func BuildStatic(pkg, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = testenv.RepoRoot() // the images are built from any package's tests
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// BuildBinaryImage builds pkg statically and writes an image holding only that
// binary, as its entrypoint at /NAME (the package's last path element), as a
// docker-archive tarball tagged ref under dir. It returns the tarball's path.
func BuildBinaryImage(dir, pkg, ref string) (string, error) {
	name := filepath.Base(pkg)
	bin := filepath.Join(dir, name)
	if err := BuildStatic(pkg, bin); err != nil {
		return "", err
	}
	img, err := image.Build([]image.File{{Path: "/" + name, Mode: 0o755, Source: bin}},
		image.Config{Entrypoint: []string{"/" + name}})
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	tar := filepath.Join(dir, name+".tar")
	if err := image.WriteTarball(tar, ref, img); err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	return tar, nil
}

// BuildPause writes the sandbox image PauseImage into dir and returns the
// tarball's path.
func BuildPause(dir string) (string, error) {
	return BuildBinaryImage(dir, "github.com/hostroute/hostroute/internal/testenv/kubenode/pause", PauseImage)
}

// BuildTestApp writes the test workload image TestAppImage into dir and returns
// the tarball's path.
func BuildTestApp(dir string) (string, error) {
	return BuildBinaryImage(dir, "github.com/hostroute/hostroute/internal/testenv/kubenode/testapp", TestAppImage)
}
