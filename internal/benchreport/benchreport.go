// Package benchreport collects what `make bench` measures and renders it: every figure is
// the set of repeated runs of one thing, reported as median, min and max; a figure may
// name a baseline measured in the same run (interleaved with it, round by round), and is
// then also reported as a ratio to it — the one number that means something on a shared,
// noisy machine.
//
// Benchmarks call Record; it appends one JSON line per figure to the file named by
// $HOSTROUTE_BENCH_OUT (nothing when unset, so `go test -bench` alone still works). The
// bench/gen command turns those lines into bench/results.json, bench/README.md and
// bench/chart.svg.
package benchreport

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
)

// EnvOut names the file Record appends to.
const EnvOut = "HOSTROUTE_BENCH_OUT"

// Figure is one measured quantity.
type Figure struct {
	// Group is the table it belongs in ("Data plane", "Pod start-up", ...); Name is
	// unique within the group.
	Group string `json:"group"`
	Name  string `json:"name"`
	Unit  string `json:"unit"`
	// Runs holds every repetition, in round order (paired with the baseline's).
	Runs []float64 `json:"runs"`
	// Baseline names the figure of the same group this one is compared with.
	Baseline string `json:"baseline,omitempty"`
	// LowerIsBetter for latencies and costs; throughput is higher-is-better.
	LowerIsBetter bool `json:"lowerIsBetter,omitempty"`
	// Target is the goal, if there is one: e.g. {Of: "ratio", Op: ">=", Value: 0.95}.
	Target *Target `json:"target,omitempty"`
	Note   string  `json:"note,omitempty"`
}

// Target is a goal a figure is checked against.
type Target struct {
	Of    string  `json:"of"` // "ratio" or "value"
	Op    string  `json:"op"` // ">=" or "<="
	Value float64 `json:"value"`
}

// Met reports whether v meets the target.
func (t Target) Met(v float64) bool {
	if t.Op == "<=" {
		return v <= t.Value
	}
	return v >= t.Value
}

func (t Target) String() string { return fmt.Sprintf("%s %s %g", t.Of, t.Op, t.Value) }

// TB is the part of testing.TB Record uses.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
}

// Record appends f to $HOSTROUTE_BENCH_OUT, as one write of one line (O_APPEND), so
// benchmarks in several processes may record to the same file.
func Record(tb TB, f Figure) {
	tb.Helper()
	path := os.Getenv(EnvOut)
	if path == "" {
		return
	}
	b, err := json.Marshal(f)
	if err != nil {
		tb.Errorf("benchreport: %v", err)
		return
	}
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		tb.Errorf("benchreport: %v", err)
		return
	}
	defer fh.Close()
	if _, err := fh.Write(append(b, '\n')); err != nil {
		tb.Errorf("benchreport: %v", err)
	}
}

// Stats is a figure's summary.
type Stats struct {
	Median, Min, Max float64
}

// Summarize returns median, min and max of xs (zero for none).
func Summarize(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// Ratios pairs runs with the baseline's round by round (they were interleaved) and
// returns each round's ratio; with unequal run counts, the ratio of the medians.
func Ratios(runs, base []float64) []float64 {
	if len(runs) == 0 || len(base) == 0 {
		return nil
	}
	if len(runs) != len(base) {
		b := Summarize(base).Median
		if b == 0 {
			return nil
		}
		return []float64{Summarize(runs).Median / b}
	}
	out := make([]float64, 0, len(runs))
	for i := range runs {
		if base[i] != 0 && !math.IsNaN(runs[i]) {
			out = append(out, runs[i]/base[i])
		}
	}
	return out
}
