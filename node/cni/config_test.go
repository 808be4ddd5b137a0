package cni

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/hostroute/hostroute/node/routes"
)

func codeOf(err error) uint {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return types.ErrInternal
}

func TestParseConfig(t *testing.T) {
	const base = `"cniVersion":"1.0.0","name":"hostroute","type":"hostroute-cni"`
	for _, tc := range []struct {
		name, in string
		code     uint   // 0: must succeed
		msg      string // substring of the error
		want     Config // checked on success (Std ignored)
	}{
		{name: "defaults", in: `{` + base + `}`,
			want: Config{AgentSocket: DefaultAgentSocket, Timeout: 30 * time.Second}},
		{name: "all keys", in: `{` + base + `,"agentSocket":"/var/run/hr.sock","mtu":9000,"timeout":"2m","logFile":"/var/log/hr.log"}`,
			want: Config{AgentSocket: "/var/run/hr.sock", MTU: 9000, Timeout: 2 * time.Minute, LogFile: "/var/log/hr.log"}},
		{name: "unknown keys ignored", in: `{` + base + `,"runtimeConfig":{"portMappings":[]},"args":{"x":1}}`,
			want: Config{AgentSocket: DefaultAgentSocket, Timeout: 30 * time.Second}},
		{name: "cniVersion 1.1.0", in: `{"cniVersion":"1.1.0","name":"n"}`,
			want: Config{AgentSocket: DefaultAgentSocket, Timeout: 30 * time.Second}},
		{name: "broken JSON", in: `{` + base, code: types.ErrDecodingFailure, msg: "cannot decode the network config"},
		{name: "not an object", in: `[1,2]`, code: types.ErrDecodingFailure, msg: "cannot decode"},
		{name: "trailing garbage", in: `{` + base + `} x`, code: types.ErrDecodingFailure},
		{name: "empty", in: ``, code: types.ErrDecodingFailure},
		{name: "no cniVersion", in: `{"name":"n"}`, code: types.ErrIncompatibleCNIVersion, msg: "no cniVersion"},
		{name: "future cniVersion", in: `{"cniVersion":"9.9.9","name":"n"}`, code: types.ErrIncompatibleCNIVersion, msg: `"9.9.9"`},
		{name: "old cniVersion", in: `{"cniVersion":"0.3.1","name":"n"}`, code: types.ErrIncompatibleCNIVersion, msg: "supports 0.4.0, 1.0.0, 1.1.0"},
		{name: "no name", in: `{"cniVersion":"1.0.0"}`, code: types.ErrInvalidNetworkConfig, msg: "no name"},
		{name: "mtu as string", in: `{` + base + `,"mtu":"1500"}`, code: types.ErrInvalidNetworkConfig, msg: `"mtu": want a number`},
		{name: "mtu too small", in: `{` + base + `,"mtu":67}`, code: types.ErrInvalidNetworkConfig, msg: "mtu 67"},
		{name: "mtu too big", in: `{` + base + `,"mtu":65536}`, code: types.ErrInvalidNetworkConfig, msg: "mtu 65536"},
		{name: "mtu fraction", in: `{` + base + `,"mtu":1500.5}`, code: types.ErrInvalidNetworkConfig, msg: `"mtu"`},
		{name: "timeout number", in: `{` + base + `,"timeout":30}`, code: types.ErrInvalidNetworkConfig, msg: `"timeout": want a string`},
		{name: "timeout garbage", in: `{` + base + `,"timeout":"soon"}`, code: types.ErrInvalidNetworkConfig, msg: `timeout "soon"`},
		{name: "timeout zero", in: `{` + base + `,"timeout":"0s"}`, code: types.ErrInvalidNetworkConfig, msg: "more than 0"},
		{name: "timeout huge", in: `{` + base + `,"timeout":"1h"}`, code: types.ErrInvalidNetworkConfig},
		{name: "relative socket", in: `{` + base + `,"agentSocket":"agent.sock"}`, code: types.ErrInvalidNetworkConfig, msg: "agentSocket"},
		{name: "unclean socket", in: `{` + base + `,"agentSocket":"/run/../x.sock"}`, code: types.ErrInvalidNetworkConfig},
		{name: "relative log", in: `{` + base + `,"logFile":"x.log"}`, code: types.ErrInvalidNetworkConfig, msg: "logFile"},
		{name: "ipam section", in: `{` + base + `,"ipam":{"type":"host-local"}}`, code: types.ErrInvalidNetworkConfig, msg: "remove the ipam section"},
		{name: "routeProtocol", in: `{` + base + `,"routeProtocol":230}`,
			want: Config{AgentSocket: DefaultAgentSocket, Timeout: 30 * time.Second, RouteProtocol: 230}},
		{name: "routeProtocol former", in: `{` + base + `,"routeProtocol":197}`,
			want: Config{AgentSocket: DefaultAgentSocket, Timeout: 30 * time.Second, RouteProtocol: 197}},
		{name: "routeProtocol of the agent", in: `{` + base + `,"routeProtocol":211}`, code: types.ErrInvalidNetworkConfig, msg: "routeProtocol 211 is an agent route protocol"},
		{name: "routeProtocol of the former agent", in: `{` + base + `,"routeProtocol":196}`, code: types.ErrInvalidNetworkConfig, msg: "routeProtocol 196"},
		{name: "routeProtocol static", in: `{` + base + `,"routeProtocol":4}`, code: types.ErrInvalidNetworkConfig, msg: "routeProtocol 4"},
		{name: "routeProtocol too big", in: `{` + base + `,"routeProtocol":256}`, code: types.ErrInvalidNetworkConfig, msg: "routeProtocol 256"},
		{name: "routeProtocol as name", in: `{` + base + `,"routeProtocol":"hostroute"}`, code: types.ErrInvalidNetworkConfig, msg: `"routeProtocol": want a number`},
		{name: "name wrong type", in: `{"cniVersion":"1.0.0","name":5}`, code: types.ErrInvalidNetworkConfig, msg: `"name"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.in))
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				wantProto := tc.want.RouteProtocol
				if wantProto == 0 {
					wantProto = routes.CNIProtocol
				}
				got := [5]any{c.AgentSocket, c.MTU, c.Timeout, c.LogFile, c.RouteProtocol}
				if want := [5]any{tc.want.AgentSocket, tc.want.MTU, tc.want.Timeout, tc.want.LogFile, wantProto}; got != want {
					t.Fatalf("got %v, want %v", got, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %s", tc.in)
			}
			if codeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got code %d %q, want code %d containing %q", codeOf(err), err, tc.code, tc.msg)
			}
		})
	}
}

func TestParsePodArgs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PodArgs
		bad  bool
	}{
		{in: "", want: PodArgs{}},
		{in: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_UID=u1", want: PodArgs{"default", "p1", "u1"}},
		{in: "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=9",
			want: PodArgs{"kube-system", "dns", "9"}},
		{in: "SOMETHING_ELSE=1;K8S_POD_NAME=p", want: PodArgs{Name: "p"}}, // unknown keys ignored
		{in: "K8S_POD_NAME", bad: true},
		{in: "K8S_POD_NAME=a=b", bad: true},
		{in: "IgnoreUnknown=maybe", bad: true},
	} {
		got, err := ParsePodArgs(tc.in)
		if tc.bad {
			if err == nil || codeOf(err) != types.ErrInvalidEnvironmentVariables || !strings.Contains(err.Error(), "CNI_ARGS") {
				t.Errorf("ParsePodArgs(%q) = %v, %v; want a code 4 error naming CNI_ARGS", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePodArgs(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestHostVethName(t *testing.T) {
	// Pinned: DEL and GC of pods created by an older binary need the very same name.
	for _, tc := range []struct{ id, ifname, want string }{
		{"abc", "eth0", "hr538f587a236"},
		{strings.Repeat("0123456789abcdef", 4), "eth0", "hrdc8ed2ee06e"},
	} {
		got := HostVethName(tc.id, tc.ifname)
		if got != tc.want || len(got) > 15 || !isHostVethName(got) {
			t.Errorf("HostVethName(%q, %q) = %q, want %q", tc.id, tc.ifname, got, tc.want)
		}
	}
	if HostVethName("a", "eth0") == HostVethName("a", "eth1") {
		t.Error("the ifname does not change the name")
	}
	for name, want := range map[string]bool{
		"hr0123456789a": true, "hr0123456789": false, "hr0123456789ab": false,
		"hr0123456789A": false, "xx0123456789a": false, "hrg123456789a": false, "eth0": false,
	} {
		if isHostVethName(name) != want {
			t.Errorf("isHostVethName(%q) = %v", name, !want)
		}
	}
}

// TestManifestConflist checks that the shipped conflist parses the way libcni hands it
// to each plugin, and that hostroute-cni accepts its part.
func TestManifestConflist(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "manifests", "cni", "10-hostroute.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		t.Fatalf("libcni: %v", err)
	}
	if list.CNIVersion != "1.0.0" || list.Name != "hostroute" || len(list.Plugins) != 2 {
		t.Fatalf("unexpected conflist: version %q name %q %d plugins", list.CNIVersion, list.Name, len(list.Plugins))
	}
	if list.Plugins[0].Network.Type != "hostroute-cni" || list.Plugins[1].Network.Type != "portmap" ||
		!list.Plugins[1].Network.Capabilities["portMappings"] {
		t.Fatalf("unexpected plugins %+v %+v", list.Plugins[0].Network, list.Plugins[1].Network)
	}
	// libcni injects name and cniVersion into each plugin's config.
	var m map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["name"], m["cniVersion"] = list.Name, list.CNIVersion
	b, _ := json.Marshal(m)
	c, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("hostroute-cni rejects its manifest config: %v", err)
	}
	if c.MTU != 0 || c.AgentSocket != DefaultAgentSocket || c.Timeout != DefaultTimeout || c.RouteProtocol != routes.CNIProtocol {
		t.Fatalf("manifest config parsed to %+v", c)
	}
}
