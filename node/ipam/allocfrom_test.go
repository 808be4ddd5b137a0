package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func poolBlock(prefix, pool string) Block {
	return Block{Prefix: netip.MustParsePrefix(prefix), Pool: pool}
}

func drainingBlock(prefix, pool string) Block {
	return Block{Prefix: netip.MustParsePrefix(prefix), Pool: pool, Draining: true}
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func parsePrefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = p
	}
	return out
}

// newPoolAllocator is an allocator on a fresh MemStore with the given node blocks.
func newPoolAllocator(t *testing.T, blocks ...Block) (*Allocator, *MemStore) {
	t.Helper()
	s := &MemStore{}
	a, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	a.SetNodeBlocks(blocks)
	return a, s
}

// allocStep is one AllocateFrom call and what it must answer.
type allocStep struct {
	owner  int
	choice Choice
	want   []string // the addresses, when err is nil
	err    error
	errHas []string
}

func runAllocSteps(t *testing.T, a *Allocator, steps []allocStep) {
	t.Helper()
	for i, st := range steps {
		got, err := a.AllocateFrom(owner(st.owner), st.choice)
		if st.err != nil {
			if !errors.Is(err, st.err) {
				t.Fatalf("step %d: AllocateFrom(c%d, %+v) = %v, %v; want %v", i, st.owner, st.choice, got, err, st.err)
			}
			for _, s := range st.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("step %d: error %q does not mention %q", i, err, s)
				}
			}
			if got != nil {
				t.Errorf("step %d: failed AllocateFrom returned %v", i, got)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d: AllocateFrom(c%d, %+v): %v", i, st.owner, st.choice, err)
		}
		if !slices.Equal(prefixStrings(got), st.want) {
			t.Fatalf("step %d: AllocateFrom(c%d, %+v) = %v, want %v", i, st.owner, st.choice, got, st.want)
		}
	}
}

func TestAllocateFrom(t *testing.T) {
	ab := Choice{V4: []string{"a", "b"}}
	for _, tc := range []struct {
		name     string
		blocks   []Block
		reserved []string
		steps    []allocStep
	}{
		{
			name: "first pool's block full: the second pool's; never an unchosen pool's",
			blocks: []Block{
				poolBlock("10.0.0.0/31", "a"),
				poolBlock("10.1.0.0/31", "b"),
				poolBlock("10.2.0.0/30", "c"),
			},
			steps: []allocStep{
				{owner: 1, choice: ab, want: []string{"10.0.0.0/32"}},
				{owner: 2, choice: ab, want: []string{"10.0.0.1/32"}},
				{owner: 3, choice: ab, want: []string{"10.1.0.0/32"}},
				{owner: 4, choice: ab, want: []string{"10.1.0.1/32"}},
				{owner: 5, choice: ab, err: ErrFull, errHas: []string{"IPv4 of IPPool a, b"}},
				{owner: 6, choice: Choice{V4: []string{"c"}}, want: []string{"10.2.0.0/32"}},
			},
		},
		{
			name: "pools are tried in the choice's order, not the prefixes'",
			blocks: []Block{
				poolBlock("10.0.0.0/31", "a"),
				poolBlock("10.1.0.0/31", "b"),
			},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"b", "a"}}, want: []string{"10.1.0.0/32"}},
				{owner: 2, choice: Choice{V4: []string{"b", "a"}}, want: []string{"10.1.0.1/32"}},
				{owner: 3, choice: Choice{V4: []string{"b", "a"}}, want: []string{"10.0.0.0/32"}},
			},
		},
		{
			name: "several blocks of one pool are all used before the next pool",
			blocks: []Block{
				poolBlock("10.0.0.0/32", "a"),
				poolBlock("10.1.0.0/32", "b"),
				poolBlock("10.0.1.0/32", "a"),
			},
			steps: []allocStep{
				{owner: 1, choice: ab, want: []string{"10.0.0.0/32"}},
				{owner: 2, choice: ab, want: []string{"10.0.1.0/32"}},
				{owner: 3, choice: ab, want: []string{"10.1.0.0/32"}},
			},
		},
		{
			name: "a block of no particular pool serves any choice",
			blocks: []Block{
				poolBlock("10.9.0.0/31", ""),
			},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"x"}}, want: []string{"10.9.0.0/32"}},
			},
		},
		{
			name:   "no block of the chosen pools",
			blocks: []Block{poolBlock("10.2.0.0/30", "c"), poolBlock("fd00::/126", "c6")},
			steps: []allocStep{
				{owner: 1, choice: ab, err: ErrNoBlock, errHas: []string{"IPv4 of IPPool a, b"}},
				{owner: 2, choice: Choice{V6: []string{"a6"}}, err: ErrNoBlock, errHas: []string{"IPv6 of IPPool a6"}},
			},
		},
		{
			name:   "no block of the chosen family",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V6: []string{"a"}}, err: ErrNoBlock, errHas: []string{"IPv6 of IPPool a"}},
			},
		},
		{
			name:  "no blocks at all",
			steps: []allocStep{{owner: 1, choice: ab, err: ErrNoBlock, errHas: []string{"IPPool a, b"}}},
		},
		{
			name:   "only a draining block of the chosen pool is no block",
			blocks: []Block{drainingBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"a"}}, err: ErrNoBlock, errHas: []string{"IPPool a"}},
			},
		},
		{
			name:   "a draining block is skipped for the next pool",
			blocks: []Block{drainingBlock("10.0.0.0/30", "a"), poolBlock("10.1.0.0/31", "b")},
			steps: []allocStep{
				{owner: 1, choice: ab, want: []string{"10.1.0.0/32"}},
				{owner: 2, choice: ab, want: []string{"10.1.0.1/32"}},
				{owner: 3, choice: ab, err: ErrFull, errHas: []string{"IPPool a, b"}},
			},
		},
		{
			name:     "reserved prefixes are skipped",
			blocks:   []Block{poolBlock("10.0.0.0/29", "a")},
			reserved: []string{"10.0.0.0/31", "10.0.0.4/32"},
			steps: []allocStep{
				{owner: 1, choice: ab, want: []string{"10.0.0.2/32"}},
				{owner: 2, choice: ab, want: []string{"10.0.0.3/32"}},
				{owner: 3, choice: ab, want: []string{"10.0.0.5/32"}},
			},
		},
		{
			name:     "reservations leaving the block full: ErrFull",
			blocks:   []Block{poolBlock("10.0.0.0/30", "a")},
			reserved: []string{"10.0.0.0/31", "10.0.0.3/32"},
			steps: []allocStep{
				{owner: 1, choice: ab, want: []string{"10.0.0.2/32"}},
				{owner: 2, choice: ab, err: ErrFull, errHas: []string{"IPPool a, b"}},
			},
		},
		{
			name:     "a reservation covering the whole block: ErrFull, the next pool",
			blocks:   []Block{poolBlock("10.0.0.0/30", "a"), poolBlock("10.1.0.0/30", "b")},
			reserved: []string{"10.0.0.0/24"},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"a"}}, err: ErrFull, errHas: []string{"IPPool a"}},
				{owner: 2, choice: ab, want: []string{"10.1.0.0/32"}},
			},
		},
		{
			name:   "dual stack gives one address per family",
			blocks: []Block{poolBlock("fd00::/126", "a6"), poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"a"}, V6: []string{"a6"}}, want: []string{"10.0.0.0/32", "fd00::/128"}},
				{owner: 2, choice: Choice{V6: []string{"a6"}}, want: []string{"fd00::1/128"}},
				{owner: 3, choice: Choice{V4: []string{"a"}}, want: []string{"10.0.0.1/32"}},
			},
		},
		{
			name:   "retry of an attachment returns what it holds",
			blocks: []Block{poolBlock("10.0.0.0/30", "a"), poolBlock("10.1.0.0/30", "b"), poolBlock("fd00::/126", "a6")},
			steps: []allocStep{
				{owner: 1, choice: Choice{V4: []string{"a"}, V6: []string{"a6"}}, want: []string{"10.0.0.0/32", "fd00::/128"}},
				{owner: 1, choice: Choice{V4: []string{"a"}, V6: []string{"a6"}}, want: []string{"10.0.0.0/32", "fd00::/128"}},
				{owner: 1, choice: Choice{V4: []string{"b"}}, want: []string{"10.0.0.0/32", "fd00::/128"}},
				{owner: 2, choice: Choice{V4: []string{"a"}}, want: []string{"10.0.0.1/32"}},
			},
		},
		{
			name:   "empty choice is invalid",
			blocks: []Block{poolBlock("10.0.0.0/30", "a")},
			steps: []allocStep{
				{owner: 1, choice: Choice{}, err: ErrInvalid},
				{owner: 1, choice: Choice{V4: []string{}, V6: []string{}}, err: ErrInvalid},
				{owner: 1, choice: Choice{V4: []string{"a"}}, want: []string{"10.0.0.0/32"}},
				// Even a retry of a holder: an empty choice is malformed.
				{owner: 1, choice: Choice{}, err: ErrInvalid},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newPoolAllocator(t, tc.blocks...)
			if tc.reserved != nil {
				a.SetReserved(parsePrefixes(t, tc.reserved...))
			}
			runAllocSteps(t, a, tc.steps)
		})
	}
}

func TestAllocateFromInvalidOwner(t *testing.T) {
	a, _ := newPoolAllocator(t, poolBlock("10.0.0.0/30", "a"))
	for _, o := range []Owner{{IfName: "eth0"}, {ContainerID: "c1"}, {}} {
		if got, err := a.AllocateFrom(o, Choice{V4: []string{"a"}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("AllocateFrom(%+v) = %v, %v; want ErrInvalid", o, got, err)
		}
	}
}

func TestAllocateFromDualStackRollback(t *testing.T) {
	for _, tc := range []struct {
		name   string
		choice Choice
		err    error
	}{
		{name: "IPv6 block full", choice: Choice{V4: []string{"a"}, V6: []string{"a6"}}, err: ErrFull},
		{name: "no IPv6 block of the pool", choice: Choice{V4: []string{"a"}, V6: []string{"b6"}}, err: ErrNoBlock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, s := newPoolAllocator(t, poolBlock("10.0.0.0/29", "a"), poolBlock("fd00::/128", "a6"))
			first, err := a.AllocateFrom(owner(1), Choice{V4: []string{"a"}, V6: []string{"a6"}})
			if err != nil || len(first) != 2 {
				t.Fatalf("first = %v, %v", first, err)
			}
			got, err := a.AllocateFrom(owner(2), tc.choice)
			if !errors.Is(err, tc.err) || got != nil {
				t.Fatalf("second = %v, %v; want %v", got, err, tc.err)
			}
			if held := a.Get(owner(2).attachment()); len(held) != 0 {
				t.Fatalf("c2 holds %v after a failed dual-stack allocation", held)
			}
			for addr, o := range s.M {
				if o.attachment() == owner(2).attachment() {
					t.Fatalf("store still holds %s for c2", addr)
				}
			}
			if len(s.M) != 2 {
				t.Fatalf("store holds %v, want only c1's two addresses", s.M)
			}
			snap := a.Snapshot()
			if l := snap[netip.MustParsePrefix("10.0.0.0/29")]; len(l) != 1 || l[0].Owner.ContainerID != "c1" {
				t.Fatalf("IPv4 block after rollback = %v, want only c1", l)
			}
			// The rolled-back IPv4 address is free again: an IPv4-only pod gets one, and
			// the block is not short by one.
			var n int
			for i := 3; ; i++ {
				if _, err := a.AllocateFrom(owner(i), Choice{V4: []string{"a"}}); err != nil {
					if !errors.Is(err, ErrFull) {
						t.Fatalf("c%d: %v", i, err)
					}
					break
				}
				n++
			}
			if n != 7 {
				t.Fatalf("%d more IPv4 addresses after the rollback, want 7", n)
			}
		})
	}
}

func TestAllocateFromDrainingBlock(t *testing.T) {
	a, _ := newPoolAllocator(t, poolBlock("10.0.0.0/30", "a"))
	ab := Choice{V4: []string{"a", "b"}}
	runAllocSteps(t, a, []allocStep{
		{owner: 1, choice: ab, want: []string{"10.0.0.0/32"}},
		{owner: 2, choice: ab, want: []string{"10.0.0.1/32"}},
	})

	aBlk := netip.MustParsePrefix("10.0.0.0/30")
	bBlk := netip.MustParsePrefix("10.1.0.0/31")
	a.SetNodeBlocks([]Block{poolBlock("10.1.0.0/31", "b"), drainingBlock("10.0.0.0/30", "a")})

	wantBlocks := []Block{drainingBlock("10.0.0.0/30", "a"), poolBlock("10.1.0.0/31", "b")}
	if got := a.NodeBlocks(); !slices.Equal(got, wantBlocks) {
		t.Fatalf("NodeBlocks = %+v, want %+v", got, wantBlocks)
	}

	runAllocSteps(t, a, []allocStep{
		// The holders keep their addresses in the draining block.
		{owner: 1, choice: ab, want: []string{"10.0.0.0/32"}},
		{owner: 3, choice: ab, want: []string{"10.1.0.0/32"}},
		// Pool a has only its draining block: no block to take from.
		{owner: 4, choice: Choice{V4: []string{"a"}}, err: ErrNoBlock, errHas: []string{"IPPool a"}},
	})

	snap, draining := a.SnapshotDraining()
	if !draining[aBlk] || draining[bBlk] || len(draining) != 1 {
		t.Fatalf("draining = %v, want only %s", draining, aBlk)
	}
	owners := func(l []Allocation) []string {
		var out []string
		for _, al := range l {
			out = append(out, al.Addr.String()+"="+al.Owner.ContainerID)
		}
		return out
	}
	if got, want := owners(snap[aBlk]), []string{"10.0.0.0=c1", "10.0.0.1=c2"}; !slices.Equal(got, want) {
		t.Fatalf("draining block's allocations = %v, want %v", got, want)
	}
	if got, want := owners(snap[bBlk]), []string{"10.1.0.0=c3"}; !slices.Equal(got, want) {
		t.Fatalf("open block's allocations = %v, want %v", got, want)
	}
	if l, ok := snap[netip.Prefix{}]; ok {
		t.Fatalf("allocations outside every block: %v", l)
	}

	// An address freed in the draining block is not handed out again.
	if _, err := a.Release(owner(1).attachment()); err != nil {
		t.Fatal(err)
	}
	runAllocSteps(t, a, []allocStep{
		{owner: 5, choice: ab, want: []string{"10.1.0.1/32"}},
		{owner: 6, choice: ab, err: ErrFull, errHas: []string{"IPPool a, b"}},
	})
	snap, draining = a.SnapshotDraining()
	if got, want := owners(snap[aBlk]), []string{"10.0.0.1=c2"}; !slices.Equal(got, want) || !draining[aBlk] {
		t.Fatalf("draining block after release = %v (draining %v), want %v", got, draining[aBlk], want)
	}

	// Once emptied, the draining block shows as an empty draining block.
	if _, err := a.Release(owner(2).attachment()); err != nil {
		t.Fatal(err)
	}
	snap, draining = a.SnapshotDraining()
	if l, ok := snap[aBlk]; !ok || len(l) != 0 || !draining[aBlk] {
		t.Fatalf("emptied draining block = %v (present %v, draining %v)", l, ok, draining[aBlk])
	}
}

func TestAllocateFromReservedAfterAllocation(t *testing.T) {
	a, s := newPoolAllocator(t, poolBlock("10.0.0.0/30", "a"))
	c := Choice{V4: []string{"a"}}
	runAllocSteps(t, a, []allocStep{{owner: 1, choice: c, want: []string{"10.0.0.0/32"}}})

	a.SetReserved(parsePrefixes(t, "10.0.0.0/32", "10.0.0.1/32"))
	runAllocSteps(t, a, []allocStep{
		// The address allocated before the reservation stays with its owner.
		{owner: 1, choice: c, want: []string{"10.0.0.0/32"}},
		{owner: 2, choice: c, want: []string{"10.0.0.2/32"}},
		{owner: 3, choice: c, want: []string{"10.0.0.3/32"}},
		{owner: 4, choice: c, err: ErrFull},
	})
	if o, ok := s.M[netip.MustParseAddr("10.0.0.0")]; !ok || o.ContainerID != "c1" {
		t.Fatalf("store lost c1's reserved-over address: %v", s.M)
	}

	// Released, the reserved address is not handed out again.
	if _, err := a.Release(owner(1).attachment()); err != nil {
		t.Fatal(err)
	}
	runAllocSteps(t, a, []allocStep{{owner: 4, choice: c, err: ErrFull}})

	// The reservation lifted, it is.
	a.SetReserved(nil)
	runAllocSteps(t, a, []allocStep{
		{owner: 4, choice: c, want: []string{"10.0.0.0/32"}},
		{owner: 5, choice: c, want: []string{"10.0.0.1/32"}},
		{owner: 6, choice: c, err: ErrFull},
	})
}

func TestSetNodeBlocksCopies(t *testing.T) {
	in := []Block{poolBlock("10.1.0.0/30", "b"), poolBlock("10.0.0.0/30", "a")}
	a, _ := newPoolAllocator(t, in...)
	in[0].Draining = true
	got := a.NodeBlocks()
	want := []Block{poolBlock("10.0.0.0/30", "a"), poolBlock("10.1.0.0/30", "b")}
	if !slices.Equal(got, want) {
		t.Fatalf("NodeBlocks = %+v, want %+v (sorted, unaffected by the caller's slice)", got, want)
	}
	got[0].Pool = "changed"
	if again := a.NodeBlocks(); !slices.Equal(again, want) {
		t.Fatalf("NodeBlocks after editing its result = %+v", again)
	}
}
