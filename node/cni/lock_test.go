package cni

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// TestAttachmentLock: a second holder waits and times out with code 11 (try again
// later); once DEL removed the file under the lock, a waiter locks a fresh file rather
// than the unlinked one, and another attachment never waits.
func TestAttachmentLock(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	first, err := lockAttachment(sock, "hraaaa", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockAttachment(sock, "hraaaa", 50*time.Millisecond)
	var ce *codedError
	if !errors.As(err, &ce) || ce.code != types.ErrTryAgainLater {
		t.Fatalf("second lock: %v, want code %d", err, types.ErrTryAgainLater)
	}
	other, err := lockAttachment(sock, "hrbbbb", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("another attachment: %v", err)
	}
	other.unlock()

	got := make(chan *attachmentLock, 1)
	go func() {
		l, err := lockAttachment(sock, "hraaaa", 2*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	time.Sleep(30 * time.Millisecond)
	first.remove()
	first.unlock()
	l := <-got
	if l == nil {
		t.Fatal("waiter got no lock")
	}
	defer l.unlock()
	if _, err := os.Stat(l.f.Name()); err != nil {
		t.Fatalf("the waiter holds an unlinked lock file: %v", err)
	}
}

// TestSweepLocks: GC removes the lock files of attachments it was not told are valid,
// keeps the valid ones and never unlinks one a call holds right now.
func TestSweepLocks(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	stale, valid, held := HostVethName("c-stale", "eth0"), HostVethName("c-valid", "eth0"), HostVethName("c-held", "eth0")
	for _, h := range []string{stale, valid} {
		l, err := lockAttachment(sock, h, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l.unlock()
	}
	h, err := lockAttachment(sock, held, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer h.unlock()
	if err := sweepLocks(sock, map[string]bool{valid: true}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(sock), lockDirName)
	for name, want := range map[string]bool{stale: false, valid: true, held: true} {
		_, err := os.Stat(filepath.Join(dir, name+".lock"))
		if got := err == nil; got != want {
			t.Errorf("lock file of %s exists: %v, want %v (%v)", name, got, want, err)
		}
	}
}
