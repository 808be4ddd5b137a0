package controller_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/controller"
)

// reportStatus writes the node's NodeNetworkStatus as its agent would: updated now, the
// block with inUse addresses.
func (e *env) reportStatus(node, cidr string, inUse int32) error {
	cur, err := e.hr.NodeNetworkStatuses.Get(e.ctx, node)
	if apierrors.IsNotFound(err) {
		obj := &v1alpha1.NodeNetworkStatus{}
		obj.Name = node
		cur, err = e.hr.NodeNetworkStatuses.Create(e.ctx, obj)
	}
	if err != nil {
		return err
	}
	cur.Status.Updated = &metav1.Time{Time: time.Now()}
	cur.Status.Blocks = []v1alpha1.BlockUsage{{CIDR: cidr, InUse: inUse, Capacity: 64}}
	_, err = e.hr.NodeNetworkStatuses.UpdateStatus(e.ctx, cur)
	return err
}

// assignedBlock waits for the node's one block.
func (e *env) assignedBlock(node string) v1alpha1.IPAMBlock {
	e.t.Helper()
	var b v1alpha1.IPAMBlock
	e.eventually(10*time.Second, "block assigned to "+node, func() string {
		bs := e.blocksOf(node)
		if len(bs) != 1 {
			return fmt.Sprintf("%d blocks", len(bs))
		}
		b = bs[0]
		return ""
	})
	return b
}

// TestDeletedNodeWhoseAgentReportsKeepsBlock: a Node object deleted while its agent still
// reports (a fresh NodeNetworkStatus, allocations in the block) keeps its block past the
// grace period; once the agent falls silent the block goes after the grace.
func TestDeletedNodeWhoseAgentReportsKeepsBlock(t *testing.T) {
	e := newEnv(t)
	e.mustPool("p", "10.31.0.0/24", 26)
	grace := 3 * time.Second
	e.runController(controller.Config{ReleaseGrace: grace})
	e.createNode("alive")
	b := e.assignedBlock("alive")
	b.Status.Allocations = []v1alpha1.Allocation{{Address: "10.31.0.7", Namespace: "default", Pod: "db-0", PodUID: "u7", ContainerID: "c7", Interface: "eth0"}}
	if _, err := e.hr.IPAMBlocks.UpdateStatus(e.ctx, &b); err != nil {
		t.Fatal(err)
	}
	if err := e.reportStatus("alive", b.Spec.CIDR, 1); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	beats := make(chan time.Time, 1)
	go func() { // the agent's heartbeat, every half second
		last := time.Now()
		defer func() { beats <- last }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if err := e.reportStatus("alive", b.Spec.CIDR, 1); err != nil {
				t.Errorf("heartbeat: %v", err)
				return
			}
			last = time.Now()
		}
	}()
	e.deleteNode("alive")
	for end := time.Now().Add(3 * grace); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if _, err := e.hr.IPAMBlocks.Get(e.ctx, b.Name); err != nil {
			close(stop)
			t.Fatalf("block of a deleted node whose agent still reports was released (get: %v)", err)
		}
	}
	close(stop)
	lastBeat := <-beats
	e.eventually(grace+10*time.Second, "block released once the agent is silent for the grace", func() string {
		if _, err := e.hr.IPAMBlocks.Get(e.ctx, b.Name); !apierrors.IsNotFound(err) {
			return fmt.Sprintf("block still there (err=%v)", err)
		}
		return ""
	})
	if silent := time.Since(lastBeat); silent < grace {
		t.Fatalf("released %s after the last heartbeat, before the %s grace", silent, grace)
	}
	e.eventually(5*time.Second, "release event says why", func() string {
		ev := e.events("IPPool", "p", "BlockReleased")
		if len(ev) == 0 || !strings.Contains(ev[0], "last reported") || !strings.Contains(ev[0], "10.31.0.7 (default/db-0)") {
			return fmt.Sprintf("events %q", ev)
		}
		t.Logf("event the user sees: BlockReleased: %s", ev[0])
		return ""
	})
}

// TestDeletedNodeReportedEmptyReleasedAtOnce: a fresh status showing the block empty
// (and an empty block status) releases it without waiting for the grace.
func TestDeletedNodeReportedEmptyReleasedAtOnce(t *testing.T) {
	e := newEnv(t)
	e.mustPool("p", "10.32.0.0/24", 26)
	e.runController(controller.Config{ReleaseGrace: time.Hour})
	e.createNode("drained")
	b := e.assignedBlock("drained")
	if err := e.reportStatus("drained", b.Spec.CIDR, 0); err != nil {
		t.Fatal(err)
	}
	e.deleteNode("drained")
	e.eventually(8*time.Second, "empty block released at once", func() string {
		if _, err := e.hr.IPAMBlocks.Get(e.ctx, b.Name); !apierrors.IsNotFound(err) {
			return fmt.Sprintf("block still there (err=%v)", err)
		}
		return ""
	})
}
