package cni

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// lockDirName is the directory, next to the agent's socket (the agent's run dir), that
// holds one lock file per attachment.
const lockDirName = "cni-locks"

// attachmentLock is an exclusive flock on one attachment's lock file, held by one plugin
// process for the whole of an ADD or DEL.
//
// Why: the CNI spec forbids concurrent calls for one attachment, but runtimes do send
// them. Without the lock two ADDs create and delete the same host veth name and the
// loser's rollback tears down (and releases the address of) the winner's work.
//
// Hazard: unlinking a lock file others wait on. DEL removes the file while it holds the
// lock; a waiter that then gets the lock holds an unlinked inode, so after locking it
// checks that the path still names the inode it locked, and starts over if not.
type attachmentLock struct{ f *os.File }

// lockAttachment takes the attachment's lock, waiting up to timeout. A timeout is code 11
// (try again later): the runtime retries, by then the other call has finished.
func lockAttachment(agentSocket, hostName string, timeout time.Duration) (*attachmentLock, error) {
	dir := filepath.Join(filepath.Dir(agentSocket), lockDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the attachment lock dir: %w", err)
	}
	path := filepath.Join(dir, hostName+".lock")
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening the attachment lock %s: %w", path, err)
		}
		if err := flockUntil(f, deadline); err != nil {
			f.Close()
			return nil, withCode(types.ErrTryAgainLater,
				fmt.Errorf("another CNI call for this attachment still holds %s: %w", path, err))
		}
		same, err := sameFile(f, path)
		if err != nil {
			f.Close()
			return nil, err
		}
		if same {
			return &attachmentLock{f: f}, nil
		}
		f.Close() // a DEL unlinked it while we waited: lock the new file
	}
}

// flockUntil polls a non-blocking flock: a blocking one cannot honour the deadline.
func flockUntil(f *os.File, deadline time.Time) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("flock: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameFile(f *os.File, path string) (bool, error) {
	var held, named unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &held); err != nil {
		return false, fmt.Errorf("stat of the attachment lock: %w", err)
	}
	if err := unix.Stat(path, &named); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat of %s: %w", path, err)
	}
	return held.Dev == named.Dev && held.Ino == named.Ino, nil
}

// remove unlinks the lock file while still holding it (DEL: the attachment is gone).
func (l *attachmentLock) remove() { _ = os.Remove(l.f.Name()) }

// unlock releases the lock (closing the file drops the flock).
func (l *attachmentLock) unlock() { _ = l.f.Close() }

// sweepLocks removes the lock files of attachments not in valid (GC: their DEL never came
// or failed before the end). Each is taken first, without waiting, so a file an ADD or DEL
// holds right now is left alone: unlinking it under them would let a third call lock a
// new file beside theirs.
func sweepLocks(agentSocket string, valid map[string]bool) error {
	dir := filepath.Join(filepath.Dir(agentSocket), lockDirName)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing attachment locks: %w", err)
	}
	for _, e := range ents {
		host, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok || !isHostVethName(host) || valid[host] {
			continue
		}
		l, err := lockAttachment(agentSocket, host, 0)
		if err != nil {
			continue // in use: the next GC looks again
		}
		l.remove()
		l.unlock()
	}
	return nil
}
