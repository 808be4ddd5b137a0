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

// FuzzAllocator drives random allocate/release/GC sequences against a model of who holds
// what, built only from the allocator's answers, and checks after every step that:
//   - no address is handed to an attachment while the model says another one holds it
//     (the allocator's own map cannot show this: a second owner overwrites the first);
//   - Release and GC free only addresses the model has, and only of the attachments
//     they were asked to free;
//   - Snapshot agrees with the model, address by address and owner by owner;
//   - an attachment never holds two addresses of one family.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x81, 4, 0x40})
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x82, 13, 14})
	f.Fuzz(func(t *testing.T, ops []byte) {
		a := mustNew(t, &MemStore{}, "10.0.0.0/29", "10.0.1.0/30", "fd00::/126")
		held := map[netip.Addr]Attachment{}
		for step, op := range ops {
			id := int(op & 0x0f)
			at := Attachment{fmt.Sprintf("c%d", id), "eth0"}
			switch op >> 6 {
			case 0, 1:
				got, err := a.Allocate(owner(id))
				if err != nil {
					break
				}
				for _, p := range got {
					if h, ok := held[p.Addr()]; ok && h != at {
						t.Fatalf("step %d: %s handed to %v while %v holds it", step, p.Addr(), at, h)
					}
					held[p.Addr()] = at
				}
			case 2:
				freed, err := a.Release(at)
				if err != nil {
					t.Fatalf("step %d: release %v: %v", step, at, err)
				}
				for _, addr := range freed {
					if h, ok := held[addr]; !ok || h != at {
						t.Fatalf("step %d: releasing %v freed %s, held by %v (held: %v)", step, at, addr, h, ok)
					}
					delete(held, addr)
				}
			case 3:
				freed, err := a.GC([]Attachment{at})
				if err != nil {
					t.Fatalf("step %d: gc keeping %v: %v", step, at, err)
				}
				for _, addr := range freed {
					if h, ok := held[addr]; !ok || h == at {
						t.Fatalf("step %d: gc keeping %v freed %s, held by %v (held: %v)", step, at, addr, h, ok)
					}
					delete(held, addr)
				}
			}
			checkAgainstModel(t, step, a, held)
		}
	})
}

// checkAgainstModel compares the allocator's Snapshot with the model.
func checkAgainstModel(t *testing.T, step int, a *Allocator, held map[netip.Addr]Attachment) {
	t.Helper()
	perFamily := map[Attachment]map[bool]int{}
	n := 0
	for blk, l := range a.Snapshot() {
		for _, al := range l {
			n++
			if blk.IsValid() && !blk.Contains(al.Addr) {
				t.Fatalf("step %d: %s listed under block %s", step, al.Addr, blk)
			}
			at := al.Owner.attachment()
			if h, ok := held[al.Addr]; !ok || h != at {
				t.Fatalf("step %d: snapshot has %s owned by %v, the model %v (held: %v)", step, al.Addr, at, h, ok)
			}
			if perFamily[at] == nil {
				perFamily[at] = map[bool]int{}
			}
			if perFamily[at][al.Addr.Is4()]++; perFamily[at][al.Addr.Is4()] > 1 {
				t.Fatalf("step %d: attachment %v holds two addresses of one family", step, at)
			}
		}
	}
	if n != len(held) {
		t.Fatalf("step %d: snapshot lists %d allocations, the model %d: %v", step, n, len(held), held)
	}
}
