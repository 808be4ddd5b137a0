package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fatalRecorder is the part of a TB Eventually uses, recording the failure.
type fatalRecorder struct{ msg string }

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	n := 0
	var ok fatalRecorder
	Eventually(&ok, time.Second, "third time", func() string {
		if n++; n < 3 {
			return fmt.Sprintf("only %d", n)
		}
		return ""
	})
	if ok.msg != "" || n != 3 {
		t.Errorf("condition true on the third call: failed %q after %d calls", ok.msg, n)
	}
	var never fatalRecorder
	Eventually(&never, 120*time.Millisecond, "never", func() string { return "still missing" })
	if !strings.Contains(never.msg, "never: not true after 120ms: still missing") {
		t.Errorf("failure %q, want what, timeout and the last answer", never.msg)
	}
}

func TestRepoRoot(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "go.mod"))
	if err != nil || !strings.HasPrefix(string(b), "module github.com/hostroute/hostroute\n") {
		t.Fatalf("RepoRoot %s: go.mod %q, %v", RepoRoot(), b, err)
	}
}
