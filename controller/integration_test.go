package controller_test

// These tests run the controller against a real kube-apiserver and etcd (internal/testenv/cluster).

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
	"github.com/hostroute/hostroute/internal/testenv"
	"github.com/hostroute/hostroute/internal/testenv/cluster"
)

type env struct {
	t    *testing.T
	ctx  context.Context
	cl   *cluster.Cluster
	kube kubernetes.Interface
	hr   *client.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cl := cluster.StartForTest(t, cluster.Options{})
	cfg := cl.RESTConfig()
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, cl: cl, kube: kube, hr: hr}
}

// runController runs one in-process controller until the test ends.
func (e *env) runController(cfg controller.Config) {
	ctx, cancel := context.WithCancel(e.ctx)
	log := slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := controller.New(log, e.kube, e.hr, cfg)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

func (e *env) createPool(name, cidr string, blockSize int32, mutate ...func(*v1alpha1.IPPool)) (*v1alpha1.IPPool, error) {
	p := &v1alpha1.IPPool{Spec: v1alpha1.IPPoolSpec{CIDR: cidr}}
	p.Name = name
	if blockSize != 0 {
		p.Spec.BlockSize = &blockSize
	}
	for _, m := range mutate {
		m(p)
	}
	return e.hr.IPPools.Create(e.ctx, p)
}

func (e *env) mustPool(name, cidr string, blockSize int32) *v1alpha1.IPPool {
	e.t.Helper()
	p, err := e.createPool(name, cidr, blockSize)
	if err != nil {
		e.t.Fatalf("create pool %s: %v", name, err)
	}
	return p
}

func (e *env) createNode(name string) {
	e.t.Helper()
	n := &corev1.Node{}
	n.Name = name
	if _, err := e.kube.CoreV1().Nodes().Create(e.ctx, n, metav1.CreateOptions{}); err != nil {
		e.t.Errorf("create node %s: %v", name, err)
	}
}

func (e *env) deleteNode(name string) {
	e.t.Helper()
	if err := e.kube.CoreV1().Nodes().Delete(e.ctx, name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatalf("delete node %s: %v", name, err)
	}
}

func (e *env) blocks() []v1alpha1.IPAMBlock {
	e.t.Helper()
	l, err := e.hr.IPAMBlocks.List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatalf("list blocks: %v", err)
	}
	return l.Items
}

func (e *env) blocksOf(node string) []v1alpha1.IPAMBlock {
	e.t.Helper()
	// The field selector declared in the CRD (selectableFields) — what the node agent uses.
	l, err := e.hr.IPAMBlocks.List(e.ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.node", node).String()})
	if err != nil {
		e.t.Fatalf("list blocks of %s: %v", node, err)
	}
	return l.Items
}

// eventually polls cond (testenv.Eventually) until it returns "" or the timeout passes.
func (e *env) eventually(timeout time.Duration, what string, cond func() string) {
	e.t.Helper()
	testenv.Eventually(e.t, timeout, what, cond)
}

// checkNoOverlap fails if two blocks overlap or a node holds more than max blocks.
func checkNoOverlap(t *testing.T, blocks []v1alpha1.IPAMBlock) {
	t.Helper()
	var ps []netip.Prefix
	for _, b := range blocks {
		p := netip.MustParsePrefix(b.Spec.CIDR)
		for i, q := range ps {
			if p.Overlaps(q) {
				t.Fatalf("blocks %s (%s) and %s (%s) overlap", p, b.Spec.Node, q, blocks[i].Spec.Node)
			}
		}
		ps = append(ps, p)
	}
}

// checkOneBlockEach fails unless nodes nodes hold exactly one block each and no two
// blocks overlap.
func checkOneBlockEach(t *testing.T, blocks []v1alpha1.IPAMBlock, nodes int) {
	t.Helper()
	checkNoOverlap(t, blocks)
	for n, c := range perNode(blocks) {
		if c != 1 {
			t.Errorf("node %s has %d blocks, want 1", n, c)
		}
	}
	if len(blocks) != nodes {
		t.Fatalf("%d blocks, want %d", len(blocks), nodes)
	}
}

func perNode(blocks []v1alpha1.IPAMBlock) map[string]int {
	m := map[string]int{}
	for _, b := range blocks {
		m[b.Spec.Node]++
	}
	return m
}

func (e *env) events(kind, name, reason string) []string {
	e.t.Helper()
	l, err := e.kube.CoreV1().Events("").List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatalf("list events: %v", err)
	}
	var out []string
	for _, ev := range l.Items {
		if ev.InvolvedObject.Kind == kind && ev.InvolvedObject.Name == name && ev.Reason == reason {
			out = append(out, ev.Message)
		}
	}
	return out
}

func (e *env) condition(pool, typ string) *metav1.Condition {
	e.t.Helper()
	p, err := e.hr.IPPools.Get(e.ctx, pool)
	if err != nil {
		e.t.Fatalf("get pool %s: %v", pool, err)
	}
	return meta.FindStatusCondition(p.Status.Conditions, typ)
}

func TestFiftyNodesJoinConcurrently(t *testing.T) {
	e := newEnv(t)
	e.mustPool("default", "10.10.0.0/16", 26)
	e.runController(controller.Config{})

	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); e.createNode(fmt.Sprintf("node-%02d", i)) }()
	}
	wg.Wait()
	e.eventually(30*time.Second, "every node has a block", func() string {
		m := perNode(e.blocks())
		if len(m) != 50 {
			return fmt.Sprintf("%d nodes have blocks", len(m))
		}
		return ""
	})
	// Let any duplicate assignment surface, then check the invariants.
	time.Sleep(2 * time.Second)
	checkOneBlockEach(t, e.blocks(), 50)
	if got := e.blocksOf("node-07"); len(got) != 1 || got[0].Spec.Node != "node-07" {
		t.Fatalf("field selector spec.node=node-07 returned %v", got)
	}
	e.eventually(10*time.Second, "pool status counts 50 blocks", func() string {
		p, _ := e.hr.IPPools.Get(e.ctx, "default")
		if p.Status.Blocks != 50 || p.Status.BlocksSummary != "50/1024" || p.Status.BlockSize != 26 {
			return fmt.Sprintf("status %+v", p.Status)
		}
		return ""
	})
}

func TestExhaustionAndReuse(t *testing.T) {
	e := newEnv(t)
	e.mustPool("small", "10.20.0.0/24", 26) // four blocks
	// No agent reports for these nodes: a deleted node's block goes after the grace.
	e.runController(controller.Config{ReleaseGrace: 2 * time.Second})
	for i := 1; i <= 5; i++ {
		e.createNode(fmt.Sprintf("n%d", i))
	}
	e.eventually(20*time.Second, "pool reports exhaustion", func() string {
		c := e.condition("small", v1alpha1.PoolExhausted)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Sprintf("Exhausted = %+v", c)
		}
		return ""
	})
	t.Logf("pool condition the user sees: Exhausted: %s", e.condition("small", v1alpha1.PoolExhausted).Message)
	if len(e.blocks()) != 4 {
		t.Fatalf("%d blocks, want 4", len(e.blocks()))
	}
	var starved string
	for i := 1; i <= 5; i++ {
		if n := fmt.Sprintf("n%d", i); len(e.blocksOf(n)) == 0 {
			starved = n
		}
	}
	if starved == "" {
		t.Fatal("no node went without a block")
	}
	e.eventually(10*time.Second, "Event on the starved node", func() string {
		ev := e.events("Node", starved, "NoFreeBlock")
		if len(ev) == 0 {
			return "no NoFreeBlock event"
		}
		if !strings.Contains(ev[0], "no free IPv4 block in IPPool small") {
			return "message: " + ev[0]
		}
		t.Logf("event the user sees on node %s: NoFreeBlock: %s", starved, ev[0])
		return ""
	})
	if ev := e.events("IPPool", "small", v1alpha1.PoolExhausted); len(ev) == 0 {
		t.Errorf("no Exhausted event on the pool")
	}

	// A deleted node's (empty) block is released after the grace (no agent status says
	// it is empty) and reused by the starved node.
	victim := "n1"
	if victim == starved {
		victim = "n2"
	}
	freed := e.blocksOf(victim)[0].Spec.CIDR
	e.deleteNode(victim)
	e.eventually(20*time.Second, "starved node gets the freed block", func() string {
		got := e.blocksOf(starved)
		if len(got) != 1 || got[0].Spec.CIDR != freed {
			return fmt.Sprintf("%s has %v, want %s", starved, got, freed)
		}
		return ""
	})
	checkNoOverlap(t, e.blocks())
	if ev := e.events("IPPool", "small", "BlockReleased"); len(ev) == 0 || !strings.Contains(ev[0], "released block "+freed+" of deleted node "+victim) {
		t.Errorf("BlockReleased events: %q", ev)
	}
}

func TestDeletedNodeWithAllocationsReleasedAfterGrace(t *testing.T) {
	e := newEnv(t)
	e.mustPool("p", "10.30.0.0/24", 26)
	grace := 3 * time.Second
	e.runController(controller.Config{ReleaseGrace: grace})
	e.createNode("gone")
	var b v1alpha1.IPAMBlock
	e.eventually(10*time.Second, "block assigned", func() string {
		bs := e.blocksOf("gone")
		if len(bs) != 1 {
			return "no block"
		}
		b = bs[0]
		return ""
	})
	// What the node agent would publish.
	b.Status.Allocations = []v1alpha1.Allocation{{Address: "10.30.0.5", Namespace: "default", Pod: "web-0", PodUID: "u1", ContainerID: "c1", Interface: "eth0"}}
	if _, err := e.hr.IPAMBlocks.UpdateStatus(e.ctx, &b); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	e.deleteNode("gone")
	e.eventually(5*time.Second, "block marked orphaned", func() string {
		got, err := e.hr.IPAMBlocks.Get(e.ctx, b.Name)
		if err != nil {
			return err.Error()
		}
		if got.Annotations[v1alpha1.AnnotationOrphanedAt] == "" {
			return "no orphaned-at annotation"
		}
		return ""
	})
	e.eventually(grace+10*time.Second, "block released after grace", func() string {
		_, err := e.hr.IPAMBlocks.Get(e.ctx, b.Name)
		if !apierrors.IsNotFound(err) {
			return fmt.Sprintf("block still there (err=%v)", err)
		}
		return ""
	})
	if waited := time.Since(deleted); waited < grace {
		t.Fatalf("released after %s, before the %s grace", waited, grace)
	}
	e.eventually(5*time.Second, "release event names the allocation", func() string {
		ev := e.events("IPPool", "p", "BlockReleased")
		if len(ev) == 0 || !strings.Contains(ev[0], "10.30.0.5 (default/web-0)") {
			return fmt.Sprintf("events %q", ev)
		}
		t.Logf("event the user sees: BlockReleased: %s", ev[0])
		return ""
	})
}

func TestWatermarkTriggersSecondBlock(t *testing.T) {
	e := newEnv(t)
	e.mustPool("p", "10.40.0.0/24", 28) // 16 addresses a block; 90% → 15
	e.runController(controller.Config{Watermark: 0.9})
	e.createNode("busy")
	var b v1alpha1.IPAMBlock
	e.eventually(10*time.Second, "first block", func() string {
		bs := e.blocksOf("busy")
		if len(bs) != 1 {
			return fmt.Sprintf("%d blocks", len(bs))
		}
		b = bs[0]
		return ""
	})
	setInUse := func(n int) {
		t.Helper()
		cur, err := e.hr.IPAMBlocks.Get(e.ctx, b.Name)
		if err != nil {
			t.Fatal(err)
		}
		cur.Status.Allocations = nil
		base := netip.MustParsePrefix(cur.Spec.CIDR).Addr()
		for i := range n {
			cur.Status.Allocations = append(cur.Status.Allocations, v1alpha1.Allocation{Address: base.String(), ContainerID: fmt.Sprint("c", i)})
			base = base.Next()
		}
		if _, err := e.hr.IPAMBlocks.UpdateStatus(e.ctx, cur); err != nil {
			t.Fatal(err)
		}
	}
	setInUse(14)
	time.Sleep(2 * time.Second)
	if n := len(e.blocksOf("busy")); n != 1 {
		t.Fatalf("below the watermark: %d blocks, want 1", n)
	}
	setInUse(15)
	e.eventually(10*time.Second, "second block at the watermark", func() string {
		if n := len(e.blocksOf("busy")); n != 2 {
			return fmt.Sprintf("%d blocks", n)
		}
		return ""
	})
	time.Sleep(time.Second)
	if n := len(e.blocksOf("busy")); n != 2 {
		t.Fatalf("%d blocks after the second, want exactly 2", n)
	}
	checkNoOverlap(t, e.blocks())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
