package image

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// annotationRefName is the OCI annotation on an image's descriptor in a layout's
// index.json that tools use to pick it out ("oci:DIR:TAG"); it holds the tag only.
const annotationRefName = "org.opencontainers.image.ref.name"

// WriteTarball writes img to path as a docker-archive tarball tagged ref (e.g.
// "hostroute/hostroute:dev"; no tag means ":latest"): the format that
// `ctr -n k8s.io images import` and `docker load` accept. The file is written
// beside path and renamed into place, so a reader never sees half a tarball.
//
// Hazard: a docker archive carries no manifest, so an importer writes its own; the
// image ID (config digest) stays the same, but the manifest digest in the runtime
// may differ from img.Digest(). Use the OCI layout (WriteLayout) to push the exact
// manifest.
func WriteTarball(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op once renamed
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := tarball.WriteToFile(tmpName, tag, img); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmpName, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmpName, path); err != nil {
		return err
	}
	return nil
}

// WriteLayout writes img as the only image of an OCI image layout in dir (for
// `crane push DIR REF` or `skopeo copy oci:DIR:TAG ...`), with ref's tag as its
// org.opencontainers.image.ref.name. Whatever dir held before is replaced: the
// layout is built in a sibling directory and renamed, so re-running does not pile
// up old images in index.json.
func WriteLayout(dir, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{annotationRefName: tag.TagStr()})); err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return nil
}

// FilesFromPaths returns one File per host path, each at the image's root under its
// base name with the given mode: how the hostroute image takes its binaries.
// Two paths with the same base name make Build fail.
func FilesFromPaths(mode os.FileMode, paths ...string) []File {
	files := make([]File, 0, len(paths))
	for _, p := range paths {
		files = append(files, File{Path: "/" + filepath.Base(p), Mode: mode, Source: p})
	}
	return files
}

// Size is what img takes in a registry or an OCI layout: its manifest, config and
// compressed layers, in bytes.
func Size(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	total := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	return total, nil
}
