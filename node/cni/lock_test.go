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
