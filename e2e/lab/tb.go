package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
)

// labTB gives the test harness what it needs of a *testing.T, for a program: Fatal ends
// the current step (not the process) so that every cleanup still runs.
type labTB struct {
	ctx      context.Context
	mu       sync.Mutex
	cleanups []func()
	failed   bool
	dirs     []string
}

func newLabTB(ctx context.Context) *labTB { return &labTB{ctx: ctx} }

// run calls f; a Fatal inside ends f early. It reports whether f finished without failure.
func (t *labTB) run(f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
	return !t.Failed()
}

func (t *labTB) Helper()                  {}
func (t *labTB) Context() context.Context { return t.ctx }
func (t *labTB) Logf(format string, args ...any) {
	fmt.Printf("   "+format+"\n", args...)
}
func (t *labTB) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}
func (t *labTB) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	runtime.Goexit()
}
func (t *labTB) Fatal(args ...any) { t.Fatalf("%s", fmt.Sprint(args...)) }
func (t *labTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}
func (t *labTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}
func (t *labTB) TempDir() string {
	d, err := os.MkdirTemp("", "hostroute-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// cleanup runs the cleanups in reverse order, as testing does.
func (t *labTB) cleanup() {
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
