package image

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarEntry is what a test checks of one layer entry.
type tarEntry struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Uname    string
	ModTime  time.Time
	Content  string
}

// layerEntries reads back the image's single layer.
func readLayer(t *testing.T, img v1.Image) []tarEntry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("image has %d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []tarEntry
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{Name: h.Name, Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid,
			Uname: h.Uname, ModTime: h.ModTime.UTC(), Content: string(b)})
	}
}

func digestOf(t *testing.T, files []File, cfg Config) v1.Hash {
	t.Helper()
	img, err := Build(files, cfg)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func sampleFiles() []File {
	return []File{
		{Path: "/hostroute-node", Mode: 0o755, Content: []byte("node binary")},
		{Path: "/routectl", Mode: 0o755, Content: []byte("cli binary")},
	}
}

func sampleConfig() Config {
	return Config{Entrypoint: []string{"/hostroute-node"}, Architecture: "amd64"}
}

func TestBuildIsReproducible(t *testing.T) {
	base := digestOf(t, sampleFiles(), sampleConfig())
	if again := digestOf(t, sampleFiles(), sampleConfig()); again != base {
		t.Fatalf("same input, different digests: %s then %s", base, again)
	}
	// File order in the input does not matter: entries are sorted.
	rev := sampleFiles()
	rev[0], rev[1] = rev[1], rev[0]
	if d := digestOf(t, rev, sampleConfig()); d != base {
		t.Errorf("reordered files changed the digest: %s vs %s", d, base)
	}

	changes := []struct {
		name  string
		files func([]File) []File
		cfg   func(Config) Config
	}{
		{name: "content", files: func(f []File) []File { f[0].Content = []byte("node binary v2"); return f }},
		{name: "mode", files: func(f []File) []File { f[1].Mode = 0o700; return f }},
		{name: "path", files: func(f []File) []File { f[1].Path = "/routectl2"; return f }},
		{name: "extra file", files: func(f []File) []File { return append(f, File{Path: "/x", Mode: 0o644}) }},
		{name: "entrypoint", cfg: func(c Config) Config { c.Entrypoint = []string{"/routectl"}; return c }},
		{name: "arch", cfg: func(c Config) Config { c.Architecture = "arm64"; return c }},
		{name: "created", cfg: func(c Config) Config { c.Created = time.Unix(1700000000, 0); return c }},
		{name: "label", cfg: func(c Config) Config { c.Labels = map[string]string{"a": "b"}; return c }},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			files, cfg := sampleFiles(), sampleConfig()
			if tc.files != nil {
				files = tc.files(files)
			}
			if tc.cfg != nil {
				cfg = tc.cfg(cfg)
			}
			if d := digestOf(t, files, cfg); d == base {
				t.Errorf("changing the %s kept digest %s", tc.name, d)
			}
		})
	}
}

// A Source file's own mode, owner and mtime must not reach the image: only its bytes.
func TestBuildSourceKeepsOnlyBytes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "hostroute-node")
	if err := os.WriteFile(src, []byte("node binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(src, time.Now(), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	fromDisk := []File{{Path: "/hostroute-node", Mode: 0o755, Source: src}, sampleFiles()[1]}
	if got, want := digestOf(t, fromDisk, sampleConfig()), digestOf(t, sampleFiles(), sampleConfig()); got != want {
		t.Fatalf("file from disk gave %s, same bytes in memory gave %s", got, want)
	}
}

func TestBuildLayerAndConfig(t *testing.T) {
	created := time.Date(2024, 5, 6, 7, 8, 9, 500, time.UTC)
	img, err := Build([]File{
		{Path: "/pause", Mode: 0o755, Content: []byte("p")},
		{Path: "app/bin/server", Mode: 0o750, Content: []byte("srv")},
		{Path: "/app/etc/conf", Mode: 0o644, Content: []byte{}},
	}, Config{Entrypoint: []string{"/app/bin/server"}, Cmd: []string{"-v"}, User: "65534:65534",
		Env: []string{"A=1"}, Architecture: "arm64", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	at := created.Truncate(time.Second)
	dir := func(n string) tarEntry { return tarEntry{Name: n, Type: tar.TypeDir, Mode: 0o755, ModTime: at} }
	want := []tarEntry{
		dir("app/"),
		dir("app/bin/"),
		{Name: "app/bin/server", Type: tar.TypeReg, Mode: 0o750, ModTime: at, Content: "srv"},
		dir("app/etc/"),
		{Name: "app/etc/conf", Type: tar.TypeReg, Mode: 0o644, ModTime: at},
		{Name: "pause", Type: tar.TypeReg, Mode: 0o755, ModTime: at, Content: "p"},
	}
	if diff := cmp.Diff(want, readLayer(t, img)); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" || !cf.Created.Time.Equal(at) {
		t.Errorf("config os/arch/created = %s/%s/%s", cf.OS, cf.Architecture, cf.Created.Time)
	}
	wantCfg := v1.Config{Entrypoint: []string{"/app/bin/server"}, Cmd: []string{"-v"}, User: "65534:65534", Env: []string{"A=1"}}
	if diff := cmp.Diff(wantCfg, cf.Config); diff != "" {
		t.Errorf("runtime config (-want +got):\n%s", diff)
	}
	if len(cf.RootFS.DiffIDs) != 1 || len(cf.History) != 1 {
		t.Errorf("rootfs diff IDs %v, history %v: want one each", cf.RootFS.DiffIDs, cf.History)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("media types: manifest %s config %s layers %v", m.MediaType, m.Config.MediaType, m.Layers)
	}
}

func TestBuildRefuses(t *testing.T) {
	ok := File{Path: "/a", Mode: 0o755, Content: []byte("a")}
	cases := []struct {
		name  string
		files []File
		cfg   Config
		want  string
	}{
		{name: "no files", want: "no files"},
		{name: "root path", files: []File{{Path: "/", Mode: 0o644}}, want: "root"},
		{name: "empty path", files: []File{{Path: "", Mode: 0o644}}, want: "root"},
		{name: "dot dot", files: []File{{Path: "/a/../etc/x", Mode: 0o644}}, want: "'..'"},
		{name: "double slash", files: []File{{Path: "/a//b", Mode: 0o644}}, want: "element"},
		{name: "trailing slash", files: []File{{Path: "/a/", Mode: 0o644}}, want: "element"},
		{name: "duplicate", files: []File{ok, {Path: "a", Mode: 0o644}}, want: "twice"},
		{name: "file is a parent", files: []File{ok, {Path: "/a/b", Mode: 0o644}}, want: "parent directory"},
		{name: "type bits in mode", files: []File{{Path: "/d", Mode: os.ModeDir | 0o755}}, want: "other than permissions"},
		{name: "content and source", files: []File{{Path: "/a", Content: []byte("x"), Source: "/etc/hostname"}}, want: "both"},
		{name: "missing source", files: []File{{Path: "/a", Source: filepath.Join(t.TempDir(), "none")}}, want: "no such file"},
		{name: "source is a directory", files: []File{{Path: "/a", Source: t.TempDir()}}, want: "not a regular file"},
		{name: "relative entrypoint", files: []File{ok}, cfg: Config{Entrypoint: []string{"a"}}, want: "absolute"},
		{name: "relative cmd", files: []File{ok}, cfg: Config{Cmd: []string{"a"}}, want: "absolute"},
		{name: "bad env", files: []File{ok}, cfg: Config{Env: []string{"NOEQUALS"}}, want: "KEY=value"},
		{name: "named user", files: []File{ok}, cfg: Config{User: "nobody"}, want: "/etc/passwd"},
		{name: "named group", files: []File{ok}, cfg: Config{User: "0:wheel"}, want: "/etc/passwd"},
		{name: "before epoch", files: []File{ok}, cfg: Config{Created: time.Unix(-5, 0)}, want: "epoch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.files, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestBuildAcceptsNamedUserWithPasswd(t *testing.T) {
	files := []File{{Path: "/etc/passwd", Mode: 0o644, Content: []byte("app:x:1000:1000::/:/app\n")},
		{Path: "/app", Mode: 0o755, Content: []byte("a")}}
	if _, err := Build(files, Config{Entrypoint: []string{"/app"}, User: "app"}); err != nil {
		t.Fatalf("named user with /etc/passwd in the image: %v", err)
	}
}

func TestFilesFromPaths(t *testing.T) {
	got := FilesFromPaths(0o755, "bin/image/rootfs/hostroute-node", "/tmp/routectl")
	want := []File{
		{Path: "/hostroute-node", Mode: 0o755, Source: "bin/image/rootfs/hostroute-node"},
		{Path: "/routectl", Mode: 0o755, Source: "/tmp/routectl"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FilesFromPaths (-want +got):\n%s", diff)
	}
}
