package install

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestManifestCopyMatches keeps manifests/cni/10-hostroute.conflist (for installs by
// hand) identical to the conflist built into hostroute-node, the one source of truth.
func TestManifestCopyMatches(t *testing.T) {
	p := filepath.Join("..", "..", "manifests", "cni", ConflistName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, ShippedConflist()) {
		t.Fatalf("%s differs from node/install/%s (the source of truth): copy it over", p, ConflistName)
	}
	if err := ValidateOwnConflist(ShippedConflist()); err != nil {
		t.Fatalf("shipped conflist: %v", err)
	}
}

func TestIsNetworkConfig(t *testing.T) {
	for name, want := range map[string]bool{
		"10-calico.conflist":                    true,
		"87-podman.conf":                        true,
		"99-loopback.json":                      true,
		"calico-kubeconfig":                     false,
		"10-calico.conflist" + DisabledSuffix:   false,
		".10-hostroute.conflist.tmp-1234":       false,
		"10-hostroute.conflist.bak":             false,
		"README":                                false,
		"10-flannel.conflist.dpkg-old.conflist": true,
	} {
		if got := IsNetworkConfig(name); got != want {
			t.Errorf("IsNetworkConfig(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNetworkOf(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{`{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`, "k8s-pod-network", false},
		{`{"cniVersion":"0.3.1","name":"cbr0","type":"bridge"}`, "cbr0", false},
		{`{"cniVersion":"1.0.0","plugins":[]}`, "", true},
		{`not json`, "", true},
		{``, "", true},
	} {
		got, err := NetworkOf([]byte(tc.in))
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("NetworkOf(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestValidateOwnConflist(t *testing.T) {
	for _, tc := range []struct {
		in, err string
	}{
		{`{"cniVersion":"1.0.0","name":"hostroute","plugins":[{"type":"hostroute-cni"},{"type":"portmap"}]}`, ""},
		{`{"cniVersion":"1.1.0","name":"hostroute","plugins":[{"type":"hostroute-cni"}]}`, ""},
		{`{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"hostroute-cni"}]}`, `network name is "mine"`},
		{`{"cniVersion":"1.0.0","name":"hostroute","plugins":[{"type":"portmap"},{"type":"hostroute-cni"}]}`, "first plugin"},
		{`{"name":"hostroute","plugins":[{"type":"hostroute-cni"}]}`, "no cniVersion"},
		{`{`, "not a CNI conflist"},
	} {
		err := ValidateOwnConflist([]byte(tc.in))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one containing %q", tc.in, err, tc.err)
		}
	}
}

// TestConflicts is the "may I install here?" decision.
func TestConflicts(t *testing.T) {
	ours := ConfFile{Name: ConflistName, Network: NetworkName}
	calico := ConfFile{Name: "10-calico.conflist", Network: "k8s-pod-network"}
	bad := errors.New("unexpected end of JSON input")
	for _, tc := range []struct {
		name  string
		files []ConfFile
		want  []string // "name target" or "name before"
	}{
		{"empty dir", nil, nil},
		{"ours only", []ConfFile{ours}, nil},
		{"calico next to ours (migration)", []ConfFile{ours, calico}, []string{"10-calico.conflist before"}},
		{"calico on a fresh node", []ConfFile{calico}, []string{"10-calico.conflist before"}},
		{"foreign at our path", []ConfFile{{Name: ConflistName, Network: "other"}}, []string{ConflistName + " target"}},
		{"unreadable at our path", []ConfFile{{Name: ConflistName, Err: bad}}, []string{ConflistName + " target"}},
		{"unreadable before ours", []ConfFile{{Name: "05-x.conf", Err: bad}}, []string{"05-x.conf before"}},
		{"old hand-made copy of ours sorts first", []ConfFile{{Name: "05-hostroute.conflist", Network: NetworkName}, ours},
			[]string{"05-hostroute.conflist before"}},
		{"later configs do not matter", []ConfFile{ours, {Name: "20-flannel.conflist", Network: "cbr0"}, {Name: "99-loopback.conf", Network: "lo"}}, nil},
		{"non-config files before ours do not matter", []ConfFile{{Name: "calico-kubeconfig"}, {Name: "00-notes.txt"},
			{Name: "10-calico.conflist" + DisabledSuffix}, {Name: ".10-hostroute.conflist.tmp-1"}, ours}, nil},
		{"uppercase sorts before lowercase, as in the runtime", []ConfFile{{Name: "10-Z.conf", Network: "z"}, ours}, []string{"10-Z.conf before"}},
		{"sorted by name", []ConfFile{{Name: ConflistName, Network: "x"}, {Name: "05-b.json", Network: "b"}, {Name: "01-a.conf", Network: "a"}},
			[]string{"01-a.conf before", "05-b.json before", ConflistName + " target"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range Conflicts(tc.files) {
				kind := "before"
				if c.Target {
					kind = "target"
				}
				got = append(got, c.File.Name+" "+kind)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("Conflicts = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRefusalMessages(t *testing.T) {
	c := Conflict{File: ConfFile{Name: "10-calico.conflist", Network: "k8s-pod-network"}}
	got := c.refusal("/host/etc/cni/net.d")
	for _, want := range []string{"/host/etc/cni/net.d/10-calico.conflist", `"k8s-pod-network"`, "--force", "10-calico.conflist" + DisabledSuffix} {
		if !strings.Contains(got, want) {
			t.Errorf("refusal %q lacks %q", got, want)
		}
	}
	c = Conflict{File: ConfFile{Name: ConflistName, Network: "other"}, Target: true}
	got = c.refusal("/d")
	for _, want := range []string{"/d/" + ConflistName, `"other"`, "--force", "refusing to overwrite"} {
		if !strings.Contains(got, want) {
			t.Errorf("refusal %q lacks %q", got, want)
		}
	}
}
