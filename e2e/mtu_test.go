package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

// TestPodMTU: without an "mtu" key a pod gets the MTU of the node's uplink (the device of
// its default route), on both veth ends; the key overrides it.
func TestPodMTU(t *testing.T) {
	_, n := newNode(t, "10.104.0.0/24", 26)
	if err := netns.Exec(n.NS, "ip", "link", "set", "up0", "mtu", "1420"); err != nil {
		t.Fatal(err)
	}
	noKey := []byte(strings.Replace(string(n.NetConf()), `"mtu":1500,`, "", 1))
	if strings.Contains(string(noKey), "mtu") {
		t.Fatalf("test config still sets mtu: %s", noKey)
	}
	for _, tc := range []struct {
		name string
		conf []byte
		want int
	}{
		{"uplink", noKey, 1420},
		{"configured", []byte(strings.Replace(string(n.NetConf()), `"mtu":1500`, `"mtu":1300`, 1)), 1300},
	} {
		p := n.NewPod("mtu-" + tc.name)
		out, err := n.CNI("ADD", p, tc.conf)
		if err != nil {
			t.Fatalf("%s: ADD: %v: %s", tc.name, err, out)
		}
		var r struct {
			Interfaces []struct {
				Name    string `json:"name"`
				MTU     int    `json:"mtu"`
				Sandbox string `json:"sandbox"`
			} `json:"interfaces"`
		}
		if err := json.Unmarshal(out, &r); err != nil || len(r.Interfaces) != 2 {
			t.Fatalf("%s: result %s: %v", tc.name, out, err)
		}
		host := r.Interfaces[0].Name
		if got := linkMTU(t, n.NS, host); got != tc.want {
			t.Errorf("%s: host veth %s MTU %d, want %d", tc.name, host, got, tc.want)
		}
		if got := linkMTU(t, p.NS, "eth0"); got != tc.want {
			t.Errorf("%s: pod eth0 MTU %d, want %d", tc.name, got, tc.want)
		}
		for _, i := range r.Interfaces {
			if i.MTU != tc.want {
				t.Errorf("%s: result says %s has MTU %d, want %d", tc.name, i.Name, i.MTU, tc.want)
			}
		}
		if _, err := n.CNI("DEL", p, tc.conf); err != nil {
			t.Fatal(err)
		}
	}
}

// linkMTU reads a link's MTU as a number (ip -j).
func linkMTU(t *testing.T, ns, dev string) int {
	t.Helper()
	out, err := netns.Output(ns, "ip", "-N", "-j", "link", "show", "dev", dev)
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		MTU int `json:"mtu"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatal(fmt.Errorf("ip link show %s: %q: %w", dev, out, err))
	}
	return links[0].MTU
}
