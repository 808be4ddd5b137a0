// Package golden compares a test's output with a file under testdata, or rewrites the
// file when the test runs with its package's -update flag.
package golden

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Check compares got with testdata/NAME.golden (relative to the test's package). With
// update it writes got there instead. rerun is the command that rewrites the file, for
// the failure message (e.g. "go test ./routectl -update").
func Check(t testing.TB, name string, got []byte, update bool, rerun string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run %s to create it)", err, rerun)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs from the golden file (-want +got; %s rewrites it):\n%s", path, rerun, d)
	}
}
