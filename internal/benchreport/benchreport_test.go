package benchreport

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRatiosPairRounds(t *testing.T) {
	got := Ratios([]float64{9, 18, 30}, []float64{10, 20, 30})
	want := []float64{0.9, 0.9, 1}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("Ratios = %v, want %v", got, want)
		}
	}
	// Unpaired: the ratio of the medians.
	if got := Ratios([]float64{5, 7}, []float64{10, 10, 10}); len(got) != 1 || got[0] != 0.6 {
		t.Fatalf("unpaired Ratios = %v", got)
	}
	if s := Summarize([]float64{3, 1, 2, 10}); s.Median != 2.5 || s.Min != 1 || s.Max != 10 {
		t.Fatalf("Summarize = %+v", s)
	}
}

// Record → Read → Build → Write: a re-recorded figure replaces the first, ratios and
// targets come out right, and every output names every figure.
func TestRecordAndRender(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "raw.jsonl")
	t.Setenv(EnvOut, raw)
	Record(t, Figure{Group: "Data plane", Name: "node → node", Unit: "Gbit/s", Runs: []float64{1, 1, 1}})
	Record(t, Figure{Group: "Data plane", Name: "pod → pod", Unit: "Gbit/s", Runs: []float64{0.5}})
	Record(t, Figure{Group: "Data plane", Name: "pod → pod", Unit: "Gbit/s", Runs: []float64{0.8, 0.9, 1},
		Baseline: "node → node", Target: &Target{Of: "ratio", Op: ">=", Value: 0.95}})
	Record(t, Figure{Group: "Pod start-up", Name: "ADD p99", Unit: "ms", Runs: []float64{4}, LowerIsBetter: true,
		Target: &Target{Of: "value", Op: "<=", Value: 10}})
	b, _ := os.ReadFile(raw)
	figs, err := Read(bytes.NewReader(b))
	if err != nil || len(figs) != 3 {
		t.Fatalf("Read: %d figures, %v", len(figs), err)
	}
	rs := Build(figs)
	pod := rs[1]
	if pod.Ratio == nil || pod.Ratio.Median != 0.9 || pod.Met == nil || *pod.Met {
		t.Fatalf("pod → pod: ratio %+v met %v (want 0.9, missed)", pod.Ratio, pod.Met)
	}
	if add := rs[2]; add.Met == nil || !*add.Met {
		t.Fatalf("ADD p99 4 ms <= 10: met %v", add.Met)
	}
	res := Results{Date: "d", Machine: "m", Figures: rs}
	if err := Write(dir, res); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "README.md"))
	svg, _ := os.ReadFile(filepath.Join(dir, "chart.svg"))
	for _, want := range []string{"## Data plane", "## Pod start-up", "0.900× node → node", "✘ missed", "✔ met", "chart.svg"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("README lacks %q:\n%s", want, md)
		}
	}
	if !strings.Contains(string(svg), "pod → pod vs node → node") || !strings.HasPrefix(string(svg), "<svg") {
		t.Errorf("chart:\n%s", svg)
	}
	var back Results
	js, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if err := json.Unmarshal(js, &back); err != nil || len(back.Figures) != 3 {
		t.Fatalf("results.json: %v, %d figures", err, len(back.Figures))
	}
}
