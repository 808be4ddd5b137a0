package cni

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseConfig: parsing stdin and CNI_ARGS never panics, every rejection carries a
// CNI code meant for it, and whatever is accepted is sane and survives a round trip.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"hostroute","type":"hostroute-cni"}`,
		`{"cniVersion":"1.1.0","name":"n","mtu":9000,"timeout":"1m30s","agentSocket":"/run/x.sock","logFile":"/var/log/x"}`,
		`{"cniVersion":"1.0.0","name":"n","mtu":"1500"}`,
		`{"cniVersion":"9.9.9","name":"n"}`,
		`{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/32"}]}}`,
		`{"cniVersion":"1.0.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.0.0","name":"n","timeout":"-1s"}`,
		`{`, `null`, `[]`, `""`,
	} {
		f.Add([]byte(s), "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_UID=u1")
	}
	f.Add([]byte(`{}`), "IgnoreUnknown=1;X=1")
	f.Add([]byte(`{}`), "K8S_POD_NAME==")
	f.Add([]byte(`{}`), ";;")

	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		c, err := ParseConfig(conf)
		if err != nil {
			if code := codeOf(err); code != types.ErrDecodingFailure && code != types.ErrInvalidNetworkConfig &&
				code != types.ErrIncompatibleCNIVersion {
				t.Fatalf("rejection with code %d: %v", code, err)
			}
		} else {
			checkSane(t, c)
			again, err := ParseConfig(marshalConfig(t, c))
			if err != nil {
				t.Fatalf("re-parsing an accepted config: %v", err)
			}
			if a, b := fields(c), fields(again); a != b {
				t.Fatalf("round trip changed %v to %v", a, b)
			}
		}

		p, err := ParsePodArgs(args)
		if err != nil {
			if codeOf(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "CNI_ARGS") {
				t.Fatalf("CNI_ARGS rejection %v (code %d)", err, codeOf(err))
			}
			return
		}
		if strings.ContainsAny(p.Namespace+p.Name+p.UID, ";=") {
			t.Fatalf("accepted values with separators: %+v", p)
		}
		s := "K8S_POD_NAMESPACE=" + p.Namespace + ";K8S_POD_NAME=" + p.Name + ";K8S_POD_UID=" + p.UID
		if q, err := ParsePodArgs(s); err != nil || q != p {
			t.Fatalf("CNI_ARGS round trip %+v -> %q -> %+v, %v", p, s, q, err)
		}
	})
}

func checkSane(t *testing.T, c *Config) {
	t.Helper()
	switch {
	case !slices.Contains(supportedVersions(), c.Std.CNIVersion):
		t.Fatalf("accepted cniVersion %q", c.Std.CNIVersion)
	case c.Std.Name == "":
		t.Fatal("accepted an empty name")
	case c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU):
		t.Fatalf("accepted mtu %d", c.MTU)
	case c.Timeout <= 0 || c.Timeout > maxTimeout:
		t.Fatalf("accepted timeout %s", c.Timeout)
	case !filepath.IsAbs(c.AgentSocket) || filepath.Clean(c.AgentSocket) != c.AgentSocket:
		t.Fatalf("accepted agentSocket %q", c.AgentSocket)
	case c.LogFile != "" && (!filepath.IsAbs(c.LogFile) || filepath.Clean(c.LogFile) != c.LogFile):
		t.Fatalf("accepted logFile %q", c.LogFile)
	case c.Std.IPAM.Type != "":
		t.Fatalf("accepted ipam %q", c.Std.IPAM.Type)
	}
}

// marshalConfig writes c back as the runtime would send it.
func marshalConfig(t *testing.T, c *Config) []byte {
	t.Helper()
	m := map[string]any{
		"cniVersion": c.Std.CNIVersion, "name": c.Std.Name, "type": c.Std.Type,
		"agentSocket": c.AgentSocket, "timeout": c.Timeout.String(), "logFile": c.LogFile,
	}
	if c.MTU != 0 { // 0: the key was absent (the uplink's MTU)
		m["mtu"] = c.MTU
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type configFields struct {
	version, name, typ, socket, log string
	mtu                             int
	timeout                         int64
}

func fields(c *Config) configFields {
	return configFields{c.Std.CNIVersion, c.Std.Name, c.Std.Type, c.AgentSocket, c.LogFile, c.MTU, int64(c.Timeout)}
}
