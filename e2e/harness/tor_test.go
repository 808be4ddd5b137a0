package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTorConfigSegments: a neighbour on another segment gets the ToR's address on that
// segment as its local address (BIRD accepts a session only there); one on the first
// segment keeps the template's. BIRD parses the result.
func TestTorConfigSegments(t *testing.T) {
	conf := TorConfig{AS: 65000, Neighbors: map[string]uint32{"192.0.2.1": 64512, "198.18.1.3": 64512}}.Config()
	for _, want := range []string{
		"  local 192.0.2.254 as 65000;\n",
		"protocol bgp n_192_0_2_1 from node { neighbor 192.0.2.1 as 64512; }\n",
		"protocol bgp n_198_18_1_3 from node { neighbor 198.18.1.3 as 64512; local 198.18.1.254; }\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird (Debian bird2) is needed to check the configuration: run `make deps`: %v", err)
	}
	path := filepath.Join(t.TempDir(), "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bird", "-p", "-c", path).CombinedOutput(); err != nil {
		t.Fatalf("bird -p: %v: %s\n%s", err, out, conf)
	}
}
