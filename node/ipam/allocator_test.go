package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func owner(i int) Owner { return Owner{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"} }

func mustNew(t testing.TB, s Store, blocks ...string) *Allocator {
	t.Helper()
	a, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	var ps []netip.Prefix
	for _, b := range blocks {
		ps = append(ps, netip.MustParsePrefix(b))
	}
	a.SetBlocks(ps)
	return a
}

func TestAllocateReleaseIdempotent(t *testing.T) {
	a := mustNew(t, &MemStore{}, "10.0.0.0/30")
	if _, err := a.Allocate(Owner{IfName: "eth0"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("missing container ID: %v", err)
	}
	got, err := a.Allocate(owner(1))
	if err != nil || len(got) != 1 || got[0].String() != "10.0.0.0/32" {
		t.Fatalf("first = %v %v", got, err)
	}
	again, _ := a.Allocate(owner(1))
	if again[0] != got[0] {
		t.Fatalf("retry gave %v, want %v", again, got)
	}
	for i := 2; i <= 4; i++ {
		if _, err := a.Allocate(owner(i)); err != nil {
			t.Fatalf("alloc %d: %v", i, err)
		}
	}
	if _, err := a.Allocate(owner(5)); !errors.Is(err, ErrFull) {
		t.Fatalf("fifth in a /30: %v, want ErrFull", err)
	}
	rel, err := a.Release(Attachment{"c2", "eth0"})
	if err != nil || len(rel) != 1 || rel[0].String() != "10.0.0.1" {
		t.Fatalf("release = %v %v", rel, err)
	}
	if rel, err := a.Release(Attachment{"c2", "eth0"}); err != nil || len(rel) != 0 {
		t.Fatalf("second release = %v %v", rel, err)
	}
	got5, err := a.Allocate(owner(5))
	if err != nil || got5[0].String() != "10.0.0.1/32" {
		t.Fatalf("reuse = %v %v", got5, err)
	}
}

func TestNoBlockAndDualStack(t *testing.T) {
	a := mustNew(t, &MemStore{})
	if _, err := a.Allocate(owner(1)); !errors.Is(err, ErrNoBlock) {
		t.Fatalf("no blocks: %v", err)
	}
	a.SetBlocks([]netip.Prefix{netip.MustParsePrefix("fd00::/126"), netip.MustParsePrefix("10.0.0.0/30")})
	got, err := a.Allocate(owner(1))
	if err != nil || len(got) != 2 || got[0].String() != "10.0.0.0/32" || got[1].String() != "fd00::/128" {
		t.Fatalf("dual stack = %v %v", got, err)
	}
}

func TestNextFitDoesNotReuseAtOnce(t *testing.T) {
	a := mustNew(t, &MemStore{}, "10.0.0.0/29")
	first, _ := a.Allocate(owner(1))
	if _, err := a.Release(Attachment{"c1", "eth0"}); err != nil {
		t.Fatal(err)
	}
	second, _ := a.Allocate(owner(2))
	if first[0] == second[0] {
		t.Fatalf("released address %s handed out again at once", first[0])
	}
}

func TestStoreFailureAllocatesNothing(t *testing.T) {
	s := &MemStore{}
	a := mustNew(t, s, "10.0.0.0/30", "fd00::/126")
	s.FailPut = errors.New("disk full")
	if _, err := a.Allocate(owner(1)); err == nil {
		t.Fatal("allocation succeeded with a failing store")
	}
	if len(a.Snapshot()[netip.MustParsePrefix("10.0.0.0/30")]) != 0 {
		t.Fatal("allocation kept in memory after the store failed")
	}
}

func TestAdoptAndGC(t *testing.T) {
	a := mustNew(t, &MemStore{}, "10.0.0.0/30")
	adopted, err := a.Adopt(map[netip.Addr]Owner{netip.MustParseAddr("10.0.0.0"): owner(9)})
	if err != nil || len(adopted) != 1 {
		t.Fatalf("adopt = %v %v", adopted, err)
	}
	got, _ := a.Allocate(owner(1))
	if got[0].String() == "10.0.0.0/32" {
		t.Fatal("adopted address handed out again")
	}
	freed, err := a.GC([]Attachment{{"c1", "eth0"}})
	if err != nil || len(freed) != 1 || freed[0].String() != "10.0.0.0" {
		t.Fatalf("gc = %v %v", freed, err)
	}
}

func TestBoltStoreSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := mustNew(t, s, "10.0.0.0/28")
	for i := range 5 {
		if _, err := a.Allocate(owner(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Release(Attachment{"c3", "eth0"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m, err := s2.Load()
	if err != nil || len(m) != 4 {
		t.Fatalf("reloaded %d allocations (%v), want 4", len(m), err)
	}
	b := mustNew(t, s2, "10.0.0.0/28")
	if got := b.Get(Attachment{"c4", "eth0"}); len(got) != 1 || got[0].String() != "10.0.0.4/32" {
		t.Fatalf("c4 after reopen = %v", got)
	}
}

// FuzzAllocator drives random allocate/release/GC sequences and checks the invariant:
// an address never has two owners, and an attachment never holds two addresses of a family.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x81, 4, 0x40})
	f.Fuzz(func(t *testing.T, ops []byte) {
		a := mustNew(t, &MemStore{}, "10.0.0.0/29", "10.0.1.0/30")
		for _, op := range ops {
			id := int(op & 0x0f)
			switch op >> 6 {
			case 0, 1:
				_, _ = a.Allocate(owner(id))
			case 2:
				_, _ = a.Release(Attachment{fmt.Sprintf("c%d", id), "eth0"})
			case 3:
				_, _ = a.GC([]Attachment{{fmt.Sprintf("c%d", id), "eth0"}})
			}
			seen := map[Attachment]int{}
			for _, l := range a.Snapshot() {
				for _, al := range l {
					seen[al.Owner.attachment()]++
				}
			}
			if len(a.byAddr) != func() int {
				n := 0
				for _, l := range a.Snapshot() {
					n += len(l)
				}
				return n
			}() {
				t.Fatal("snapshot lost an allocation")
			}
			for at, n := range seen {
				if n > 1 {
					t.Fatalf("attachment %v holds %d IPv4 addresses", at, n)
				}
			}
		}
	})
}
