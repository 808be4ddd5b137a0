package bird

import (
	"strings"
	"testing"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

const conf = `log stderr all;
router id 192.0.2.9;
protocol device {}
protocol static s1 { ipv4; route 198.51.100.0/24 blackhole; }
`

// TestStartQueryRestart: BIRD answers on its control socket, takes a new configuration
// without a restart, and a Restart is a new process with the same configuration and
// one log across both runs.
func TestStartQueryRestart(t *testing.T) {
	ns := netns.ForTest(t, netns.OwnedPrefix("hrtest-bird-"))
	b := Start(t, ns, conf)
	out, err := b.Query("show route")
	if err != nil || !strings.Contains(out, "198.51.100.0/24") {
		t.Fatalf("show route: %v\n%s", err, out)
	}
	if err := b.Reconfigure(strings.Replace(conf, "198.51.100.0/24", "203.0.113.0/24", 1)); err != nil {
		t.Fatal(err)
	}
	out, _ = b.Query("show route")
	if !strings.Contains(out, "203.0.113.0/24") || strings.Contains(out, "198.51.100.0/24") {
		t.Fatalf("after Reconfigure:\n%s", out)
	}
	before := b.PID()
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if b.PID() == before {
		t.Fatalf("Restart kept PID %d", before)
	}
	if out, _ = b.Query("show route"); !strings.Contains(out, "203.0.113.0/24") {
		t.Fatalf("after Restart the new configuration is gone:\n%s", out)
	}
	if n := strings.Count(b.Log(), "Started"); n != 2 {
		t.Errorf("log has %d start lines, want 2 (one per run):\n%s", n, b.Log())
	}
}
