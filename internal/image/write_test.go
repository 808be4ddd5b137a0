package image

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// builtImage is a sample image with the digests the writers must keep.
type builtImage struct {
	img        v1.Image
	digest     string
	configName string
}

func buildSample(t *testing.T) *builtImage {
	t.Helper()
	img, err := Build(sampleFiles(), sampleConfig())
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return &builtImage{img: img, digest: d.String(), configName: cfgName.String()}
}

func TestWriteTarballReadsBack(t *testing.T) {
	for _, ref := range []string{"hostroute/hostroute:dev", "registry.example:5000/team/hostroute:v1"} {
		t.Run(ref, func(t *testing.T) {
			b := buildSample(t)
			path := filepath.Join(t.TempDir(), "out", "hostroute.tar")
			if err := WriteTarball(path, ref, b.img); err != nil {
				t.Fatalf("WriteTarball: %v", err)
			}
			m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
			if err != nil {
				t.Fatalf("manifest.json: %v", err)
			}
			if len(m) != 1 || !cmp.Equal(m[0].RepoTags, []string{ref}) {
				t.Fatalf("manifest.json = %+v, want one image tagged %s", m, ref)
			}
			tag, err := name.NewTag(ref)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tarball.ImageFromPath(path, &tag)
			if err != nil {
				t.Fatalf("ImageFromPath: %v", err)
			}
			cfgName, err := got.ConfigName()
			if err != nil {
				t.Fatal(err)
			}
			if cfgName.String() != b.configName {
				t.Errorf("image ID read back %s, built %s", cfgName, b.configName)
			}
			cf, err := got.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !cmp.Equal(cf.Config.Entrypoint, []string{"/hostroute-node"}) || cf.OS != "linux" || cf.Architecture != "amd64" {
				t.Errorf("config read back: entrypoint %q os %s arch %s", cf.Config.Entrypoint, cf.OS, cf.Architecture)
			}
			var names []string
			for _, e := range readLayer(t, got) {
				if e.Type != tar.TypeReg || e.Mode != 0o755 || e.UID != 0 || e.GID != 0 {
					t.Errorf("entry %+v: want a regular file, mode 0755, owner 0:0", e)
				}
				names = append(names, e.Name)
			}
			if want := []string{"hostroute-node", "routectl"}; !cmp.Equal(names, want) {
				t.Errorf("files read back %q, want %q", names, want)
			}
		})
	}
}

func TestWriteTarballIsReproducibleAndAtomic(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	if err := WriteTarball(a, "hostroute/hostroute:dev", buildSample(t).img); err != nil {
		t.Fatal(err)
	}
	if err := WriteTarball(b, "hostroute/hostroute:dev", buildSample(t).img); err != nil {
		t.Fatal(err)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if len(ab) == 0 || !bytes.Equal(ab, bb) {
		t.Errorf("two tarballs of the same image differ (%d and %d bytes)", len(ab), len(bb))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Errorf("directory holds %d entries, want the 2 tarballs and no temporary files", len(ents))
	}
}

func TestWriteTarballRefusesBadRef(t *testing.T) {
	for _, ref := range []string{"", "UPPER/case:dev", "hostroute/hostroute@sha256:" + string(bytes.Repeat([]byte("a"), 64))} {
		path := filepath.Join(t.TempDir(), "x.tar")
		if err := WriteTarball(path, ref, buildSample(t).img); err == nil {
			t.Errorf("WriteTarball(%q) succeeded, want an error (a docker archive needs a tag)", ref)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("WriteTarball(%q) left %s behind", ref, path)
		}
	}
}

func TestWriteLayoutReplaces(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "oci")
	b := buildSample(t)
	// Twice: the second write must replace, not add a second manifest.
	for range 2 {
		if err := WriteLayout(dir, "hostroute/hostroute:dev", b.img); err != nil {
			t.Fatalf("WriteLayout: %v", err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.Digest.String() != b.digest || desc.Annotations[annotationRefName] != "dev" {
		t.Errorf("index entry %s %v, want %s with ref name dev", desc.Digest, desc.Annotations, b.digest)
	}
	got, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := got.Digest(); err != nil || d.String() != b.digest {
		t.Errorf("image from layout has digest %v (%v), want %s", d, err, b.digest)
	}
	if n := len(readLayer(t, got)); n != 2 {
		t.Errorf("layout image layer has %d entries, want 2", n)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".oci.tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary directories left: %v", leftovers)
	}
}

func TestSize(t *testing.T) {
	b := buildSample(t)
	size, err := Size(b.img)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := b.img.RawManifest()
	cfg, _ := b.img.RawConfigFile()
	layers, _ := b.img.Layers()
	ls, _ := layers[0].Size()
	if want := int64(len(raw)+len(cfg)) + ls; size != want {
		t.Errorf("Size = %d, want manifest+config+layer = %d", size, want)
	}
}
