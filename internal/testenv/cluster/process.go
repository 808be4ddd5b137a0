package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hostroute/hostroute/internal/testenv/proc"
)

// errAddrInUse marks a start attempt that failed because a port was taken
// between picking it and binding it; Start retries those once.
var errAddrInUse = errors.New("address already in use")

// member is one process of the control plane, with its output.
type member struct {
	*proc.Proc
	out *lineWriter
}

// spawn starts bin (inside netns, if set) with its output going to sink, prefixed with
// its name, and records its PID in Dir.
func (c *Cluster) spawn(netns string, sink io.Writer, name, bin string, args ...string) (*member, error) {
	out := &lineWriter{prefix: name + ": ", sink: sink}
	p, err := c.spawner.Spawn(proc.Spec{Name: name, NetNS: netns, Dir: c.Dir, Out: out, Notes: sink, Bin: bin, Args: args})
	if err != nil {
		return nil, err
	}
	m := &member{Proc: p, out: out}
	c.procs = append(c.procs, m)
	return m, nil
}

// exitError describes a process that exited while it should have been
// running, with the end of its output, which is nearly always where the reason
// is.
func (p *member) exitError() error {
	tail := p.out.tail()
	_, exitErr := p.Exited()
	err := fmt.Errorf("%s exited early (%v); last output:\n%s", p.Name, exitErr, tail)
	if strings.Contains(tail, "address already in use") {
		return fmt.Errorf("%w: %w", errAddrInUse, err)
	}
	return err
}

// waitHTTP polls url, served by p, until it answers 200, ctx ends, or any of
// procs exits, so that a process dying at start-up fails Start at once with
// its own last words instead of as a timeout.
func waitHTTP(ctx context.Context, p *member, url, token string, procs []*member) error {
	what := p.Name
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			// The apiserver's certificate is self-signed, and only readiness
			// is being checked here.
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test apiserver
			DisableKeepAlives: true,
		},
	}
	defer client.CloseIdleConnections()
	var last string
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, q := range procs {
			select {
			case <-q.Done():
				return q.exitError()
			default:
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w (last answer: %s); last output:\n%s",
				what, url, ctx.Err(), last, p.out.tail())
		case <-tick.C:
		}
	}
}

// lockedWriter serialises writes from the output copiers of both processes,
// since a caller's io.Writer need not be safe for concurrent use.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// lineWriter prefixes each line of a process's output with its name before
// passing it on, and keeps the last tailLines lines for error messages.
type lineWriter struct {
	prefix string
	sink   io.Writer

	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	// A failing log sink must not block or kill the process, so its errors
	// are dropped rather than returned to the copier.
	return len(b), nil
}

func (w *lineWriter) emit(line string) {
	_, _ = io.WriteString(w.sink, w.prefix+line+"\n")
	w.lines = append(w.lines, line)
	if len(w.lines) > tailLines {
		w.lines = w.lines[len(w.lines)-tailLines:]
	}
}

// Flush emits a final line that had no newline; proc calls it once the process exited.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.emit(string(w.partial))
		w.partial = nil
	}
}

func (w *lineWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// sweepLeftovers removes the cluster directories of test binaries that are gone, killing
// the processes still working in them first. Only our own binaries count, so nothing
// else that happens to name such a directory is hit. Errors are ignored: the sweep is
// housekeeping and must not fail a test that would otherwise pass.
func sweepLeftovers(binaries []string) {
	proc.SweepDirs(dirPrefix, func(dir string) {
		// They are not our children, so they cannot be waited for; KillAndWait gives
		// the kernel a moment to release their ports before the new cluster binds.
		proc.KillAndWait(proc.PIDsUsing(dir, binaries...), 2*time.Second)
		_ = os.RemoveAll(dir)
	})
}
