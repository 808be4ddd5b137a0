// Package image builds small, reproducible OCI images from a list of files, with no
// container daemon and no registry: an empty base (scratch), one layer holding the
// files, and a config. It is what `make image` uses for the hostroute image, and test
// code can use it to build other tiny images (a test app, a pause image).
//
// Reproducibility: every file in the layer gets owner 0:0, the mode the caller gives
// and the same modification time (Config.Created, the Unix epoch by default); entries
// are sorted by path; a file read from disk keeps only its bytes (its own mode, owner
// and mtime are ignored). So the same files and Config give the same digest on every
// run with the same Go toolchain (the gzip bytes come from compress/gzip, whose output
// may change between Go releases).
//
// Hazard: the image has nothing but the given files, no /etc/passwd and no shell, so
// Config.User must be numeric unless the files include /etc/passwd, and an
// Entrypoint or Cmd must name a path in the image.
package image

import (
	"fmt"
	"io/fs"
	"runtime"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one regular file in the image. Give exactly one of Content and Source.
type File struct {
	// Path in the image, e.g. "/hostroute-node" or "/app/bin/server". Parent
	// directories are added to the layer (mode 0755, owner 0:0).
	Path string
	// Mode holds permission bits only (e.g. 0o755); other mode bits are an error.
	Mode fs.FileMode
	// Content is the file's bytes.
	Content []byte
	// Source is a path on this machine to read the bytes from (at Build time).
	Source string
}

// Config is the image's runtime configuration. Zero values give a linux image for
// the architecture of the running program, created at the Unix epoch, with no
// entrypoint.
type Config struct {
	Entrypoint []string
	Cmd        []string
	// Env entries as KEY=value. No PATH is set unless given here.
	Env        []string
	WorkingDir string
	// User as "uid" or "uid:gid" (numeric: there is no /etc/passwd unless a File
	// adds one). Empty runs as 0:0.
	User   string
	Labels map[string]string
	// OS defaults to "linux"; Architecture to runtime.GOARCH.
	OS           string
	Architecture string
	// Created is the image's creation time and every file's mtime (truncated to
	// whole seconds). Zero means the Unix epoch, which keeps the digest fixed.
	Created time.Time
}

// Build returns an image with one layer holding files and the configuration cfg.
// The image uses OCI media types (manifest, config and a gzip layer).
func Build(files []File, cfg Config) (v1.Image, error) {
	cfg = withDefaults(cfg)
	if err := validateConfig(cfg, files); err != nil {
		return nil, err
	}
	layer, err := buildLayer(files, cfg.Created)
	if err != nil {
		return nil, err
	}

	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	created := v1.Time{Time: cfg.Created}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "hostroute image builder", Comment: fmt.Sprintf("%d files", len(files))},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS = cfg.OS
	cf.Architecture = cfg.Architecture
	cf.Config = v1.Config{
		Entrypoint: cfg.Entrypoint,
		Cmd:        cfg.Cmd,
		Env:        cfg.Env,
		WorkingDir: cfg.WorkingDir,
		User:       cfg.User,
		Labels:     cfg.Labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

func withDefaults(cfg Config) Config {
	if cfg.OS == "" {
		cfg.OS = "linux"
	}
	if cfg.Architecture == "" {
		cfg.Architecture = runtime.GOARCH
	}
	if cfg.Created.IsZero() {
		cfg.Created = time.Unix(0, 0)
	}
	cfg.Created = cfg.Created.UTC().Truncate(time.Second)
	return cfg
}

// validateConfig catches the mistakes that would only show when a runtime starts
// the container: a relative entrypoint (no PATH, no shell) and a user name that
// cannot be looked up.
func validateConfig(cfg Config, files []File) error {
	if cfg.Created.Before(time.Unix(0, 0)) {
		return fmt.Errorf("created time %s is before the Unix epoch", cfg.Created)
	}
	if len(cfg.Entrypoint) > 0 && !strings.HasPrefix(cfg.Entrypoint[0], "/") {
		return fmt.Errorf("entrypoint %q is not an absolute path (the image has no PATH)", cfg.Entrypoint[0])
	}
	if len(cfg.Entrypoint) == 0 && len(cfg.Cmd) > 0 && !strings.HasPrefix(cfg.Cmd[0], "/") {
		return fmt.Errorf("cmd %q is not an absolute path (the image has no PATH)", cfg.Cmd[0])
	}
	for _, e := range cfg.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("env entry %q is not KEY=value", e)
		}
	}
	if cfg.User != "" && !numericUser(cfg.User) && !hasFile(files, "/etc/passwd") {
		return fmt.Errorf("user %q is not numeric and the image has no /etc/passwd", cfg.User)
	}
	return nil
}

func numericUser(u string) bool {
	uid, gid, hasGID := strings.Cut(u, ":")
	if _, err := strconv.ParseUint(uid, 10, 32); err != nil {
		return false
	}
	if hasGID {
		if _, err := strconv.ParseUint(gid, 10, 32); err != nil {
			return false
		}
	}
	return true
}

func hasFile(files []File, p string) bool {
	for _, f := range files {
		if n, err := cleanPath(f.Path); err == nil && n == strings.TrimPrefix(p, "/") {
			return true
		}
	}
	return false
}
