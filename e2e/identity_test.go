package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/e2e/harness"
)

// TestAgentWritesOnlyItsOwnNode runs against the real API server with the shipped RBAC and
// admission policy: node A's agent token (bound to a pod on A) may write A's IPAMBlock
// status and NodeNetworkStatus and is refused B's, with the message the user sees; a
// hostroute-node token not bound to a pod is refused everything; RBAC keeps the agent
// out of block specs and of Secrets outside hostroute-system.
func TestAgentWritesOnlyItsOwnNode(t *testing.T) {
	e := harness.NewEnv(t, bin)
	for _, n := range []string{"node-a", "node-b"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		if _, err := e.Kube.CoreV1().Nodes().Create(e.Ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		b := &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: map[string]string{"node-a": "10.9.0.0/26", "node-b": "10.9.0.64/26"}[n], Pool: "p", Node: n}}
		b.Name = "block-" + n
		if _, err := e.HR.IPAMBlocks.Create(e.Ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	clientFor := func(tok string) *client.Client {
		_, hr, err := e.Clients(tok)
		if err != nil {
			t.Fatal(err)
		}
		return hr
	}
	tokA, err := e.AgentToken("node-a")
	if err != nil {
		t.Fatal(err)
	}
	unbound, err := e.ServiceAccountToken("hostroute-node")
	if err != nil {
		t.Fatal(err)
	}
	a, stray := clientFor(tokA), clientFor(unbound)
	kubeA, _, _ := e.Clients(tokA)

	writeBlock := func(c *client.Client, name string) error {
		b, err := e.HR.IPAMBlocks.Get(e.Ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		b.Status.Allocations = []v1alpha1.Allocation{{Address: strings.TrimSuffix(b.Spec.CIDR, "/26"), PodUID: "u", Namespace: "default", Pod: "p", ContainerID: "c", Interface: "eth0"}}
		_, err = c.IPAMBlocks.UpdateStatus(e.Ctx, b)
		return err
	}
	nns := func(name string) *v1alpha1.NodeNetworkStatus {
		s := &v1alpha1.NodeNetworkStatus{}
		s.Name = name
		return s
	}
	refused := func(what string, err error, want string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed, want refused", what)
			return
		}
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want Forbidden containing %q", what, err, want)
			return
		}
		t.Logf("%s: refused: %v", what, err)
	}
	allowed := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v, want allowed", what, err)
		}
	}

	allowed("A writes its own block's status", writeBlock(a, "block-node-a"))
	refused("A writes B's block status", writeBlock(a, "block-node-b"),
		"hostroute-node on node node-a may write only its own node objects: IPAMBlock block-node-b belongs to node node-b")
	_, err = a.NodeNetworkStatuses.Create(e.Ctx, nns("node-a"))
	allowed("A creates its NodeNetworkStatus", err)
	_, err = a.NodeNetworkStatuses.Create(e.Ctx, nns("node-b"))
	refused("A creates B's NodeNetworkStatus", err,
		"may write only its own node objects: NodeNetworkStatus node-b belongs to node node-b")
	if _, err := e.HR.NodeNetworkStatuses.Create(e.Ctx, nns("node-b")); err != nil {
		t.Fatal(err)
	}
	cur, err := e.HR.NodeNetworkStatuses.Get(e.Ctx, "node-b")
	if err != nil {
		t.Fatal(err)
	}
	cur.Status.LastError = "forged"
	_, err = a.NodeNetworkStatuses.UpdateStatus(e.Ctx, cur)
	refused("A updates B's NodeNetworkStatus", err, "NodeNetworkStatus node-b belongs to node node-b")
	refused("A deletes B's NodeNetworkStatus", a.NodeNetworkStatuses.Delete(e.Ctx, "node-b", metav1.DeleteOptions{}),
		"NodeNetworkStatus node-b belongs to node node-b")
	allowed("A deletes its own NodeNetworkStatus", a.NodeNetworkStatuses.Delete(e.Ctx, "node-a", metav1.DeleteOptions{}))

	const noClaim = "this token has no node-name claim"
	refused("a token without the node claim writes a block status", writeBlock(stray, "block-node-a"), noClaim)
	_, err = stray.NodeNetworkStatuses.Create(e.Ctx, nns("node-a"))
	refused("a token without the node claim creates a NodeNetworkStatus", err, noClaim)

	// RBAC: no spec writes, Secrets only by name in hostroute-system.
	b, _ := e.HR.IPAMBlocks.Get(e.Ctx, "block-node-a")
	b.Spec.Node = "node-b"
	_, err = a.IPAMBlocks.Update(e.Ctx, b)
	refused("A moves its block to another node (spec)", err, "cannot update resource \"ipamblocks\"")
	for _, ns := range []string{"kube-system", harness.Namespace} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tor-md5", Namespace: ns}, StringData: map[string]string{"password": "x"}}
		if _, err := e.Kube.CoreV1().Secrets(ns).Create(e.Ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = kubeA.CoreV1().Secrets("kube-system").Get(e.Ctx, "tor-md5", metav1.GetOptions{})
	refused("A reads a Secret in kube-system", err, "cannot get resource \"secrets\"")
	_, err = kubeA.CoreV1().Secrets(harness.Namespace).List(e.Ctx, metav1.ListOptions{})
	refused("A lists Secrets in hostroute-system", err, "cannot list resource \"secrets\"")
	_, err = kubeA.CoreV1().Secrets(harness.Namespace).Get(e.Ctx, "tor-md5", metav1.GetOptions{})
	allowed("A reads a BGP password Secret in hostroute-system by name", err)
}

// TestMD5WithShippedRBAC: with only the shipped RBAC, the agent reads the TCP-MD5 password
// a BGPPeer names in hostroute-system and its session to a BIRD ToR that requires the
// password comes up; a BGPPeer naming a Secret in another namespace is skipped with a
// Warning that says where the Secret must be.
func TestMD5WithShippedRBAC(t *testing.T) {
	const password = "s3cret-md5"
	e := harness.NewEnv(t, bin)
	tor := e.MakeFabric()
	e.Pool("pods", "10.201.0.0/16", 26, false)
	for _, ns := range []string{harness.Namespace, "kube-system"} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tor-md5", Namespace: ns}, StringData: map[string]string{"password": password}}
		if _, err := e.Kube.CoreV1().Secrets(ns).Create(e.Ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	peer := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: harness.FabricGateway, ASNumber: 65000,
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Namespace: harness.Namespace, Name: "tor-md5", Key: "password"}}}
	peer.Name = "tor"
	if _, err := e.HR.BGPPeers.Create(e.Ctx, peer); err != nil {
		t.Fatal(err)
	}
	elsewhere := &v1alpha1.BGPPeer{Spec: v1alpha1.BGPPeerSpec{PeerIP: "192.0.2.200", ASNumber: 65001,
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Namespace: "kube-system", Name: "tor-md5", Key: "password"}}}
	elsewhere.Name = "secret-elsewhere"
	if _, err := e.HR.BGPPeers.Create(e.Ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	bird := e.StartBIRD(tor, harness.TorConfig{AS: 65000, Neighbors: map[string]uint32{"192.0.2.1": 64512}, Password: password}.Config())
	e.RunController(controller.Config{})
	n := e.AddNode("node-1", "192.0.2.1")
	e.Eventually(30*time.Second, "MD5 session to the ToR Established", func() string {
		out, err := bird.Query("show protocols")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(out, "Established") {
			return out + "\nagent log:\n" + lastLines(n.Log(), 20)
		}
		return ""
	})
	want := "BGPPeer secret-elsewhere: password Secret kube-system/tor-md5: hostroute-node reads Secrets only in namespace hostroute-system; move the Secret there; peer skipped"
	e.Eventually(20*time.Second, "Warning Event for the Secret outside hostroute-system", func() string {
		evs, err := e.Kube.CoreV1().Events("").List(e.Ctx, metav1.ListOptions{})
		if err != nil {
			return err.Error()
		}
		var seen []string
		for _, ev := range evs.Items {
			if ev.Reason == "BGPConfigProblem" {
				if ev.Message == want {
					return ""
				}
				seen = append(seen, ev.Message)
			}
		}
		return fmt.Sprintf("events: %q", seen)
	})
}
