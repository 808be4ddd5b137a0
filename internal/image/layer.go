package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is one tar header to write: a directory (content nil) or a regular file.
type entry struct {
	name    string // relative, cleaned, e.g. "app/bin/server"; directories end in "/"
	dir     bool
	mode    fs.FileMode
	content []byte
}

// buildLayer returns a gzip OCI layer holding files. The whole layer is built and
// compressed in memory once: the image's few binaries are tens of MB, and the
// library's openers are called several times (digest, diff ID, each writer), so
// compressing once is both faster and keeps every read the same bytes.
func buildLayer(files []File, mtime time.Time) (v1.Layer, error) {
	entries, err := layerEntries(files)
	if err != nil {
		return nil, err
	}
	blob, err := writeLayerBlob(entries, mtime)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return layer, nil
}

// layerEntries turns files into sorted tar entries, with the parent directories each
// path needs. It reads Source files.
func layerEntries(files []File) ([]entry, error) {
	if len(files) == 0 {
		return nil, errors.New("image has no files")
	}
	byName := make(map[string]entry, len(files))
	for _, f := range files {
		name, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		if f.Mode&^fs.ModePerm != 0 {
			return nil, fmt.Errorf("%s: mode %v has bits other than permissions", f.Path, f.Mode)
		}
		if _, dup := byName[name]; dup {
			return nil, fmt.Errorf("%s: path given twice", f.Path)
		}
		content, err := fileContent(f)
		if err != nil {
			return nil, err
		}
		byName[name] = entry{name: name, mode: f.Mode, content: content}
	}
	for name := range byName {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, isFile := byName[d]; isFile {
				return nil, fmt.Errorf("/%s is a file and also the parent directory of /%s", d, name)
			}
			byName[d+"/"] = entry{name: d + "/", dir: true, mode: 0o755}
		}
	}
	entries := make([]entry, 0, len(byName))
	for _, e := range byName {
		entries = append(entries, e)
	}
	// Sorting on the name with its trailing "/" puts each directory before its
	// contents ("app/" < "app/x"), which extractors need.
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return entries, nil
}

// cleanPath turns an image path into a tar entry name: relative, no "." or ".."
// elements, not the root. A ".." is refused rather than cleaned away, so that a
// caller's mistake does not silently land a file elsewhere.
func cleanPath(p string) (string, error) {
	rel := strings.TrimPrefix(p, "/")
	if rel == "" {
		return "", fmt.Errorf("path %q: empty or the root", p)
	}
	for elem := range strings.SplitSeq(rel, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return "", fmt.Errorf("path %q: empty, '.' or '..' element", p)
		}
	}
	return rel, nil
}

func fileContent(f File) ([]byte, error) {
	switch {
	case f.Content != nil && f.Source != "":
		return nil, fmt.Errorf("%s: both Content and Source given", f.Path)
	case f.Source == "":
		return f.Content, nil
	}
	st, err := os.Stat(f.Source)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: source %s is not a regular file", f.Path, f.Source)
	}
	b, err := os.ReadFile(f.Source)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return b, nil
}

// writeLayerBlob writes entries as a gzip-compressed tar. Headers carry only what
// must be there (name, type, mode, size, owner 0:0, mtime), so nothing of the
// building machine leaks in: no user names, no access or change times.
func writeLayerBlob(entries []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{
			Name:    e.name,
			Mode:    int64(e.mode.Perm()),
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.content); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}
