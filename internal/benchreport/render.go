package benchreport

import (
	"bufio"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// Results is bench/results.json.
type Results struct {
	Date    string   `json:"date"`
	Machine string   `json:"machine"` // kernel, cores, Go version
	Commit  string   `json:"commit,omitempty"`
	Figures []Result `json:"figures"`
}

// Result is a Figure with its summary.
type Result struct {
	Figure
	Stats
	// Ratio summarizes the per-round ratios to the baseline (nil without one).
	Ratio *Stats `json:"ratio,omitempty"`
	// Met is whether the target is met (nil without one).
	Met *bool `json:"met,omitempty"`
}

// Read reads the JSON lines Record wrote. A figure recorded twice (group and name) keeps
// the later one: a benchmark re-run replaces its numbers.
func Read(r io.Reader) ([]Figure, error) {
	var out []Figure
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var f Figure
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if i := slices.IndexFunc(out, func(o Figure) bool { return o.Group == f.Group && o.Name == f.Name }); i >= 0 {
			out[i] = f
			continue
		}
		out = append(out, f)
	}
	return out, sc.Err()
}

// Build computes every figure's stats, ratio and target verdict.
func Build(figs []Figure) []Result {
	out := make([]Result, 0, len(figs))
	for _, f := range figs {
		r := Result{Figure: f, Stats: Summarize(f.Runs)}
		if f.Baseline != "" {
			if i := slices.IndexFunc(figs, func(b Figure) bool { return b.Group == f.Group && b.Name == f.Baseline }); i >= 0 {
				if rs := Ratios(f.Runs, figs[i].Runs); len(rs) > 0 {
					s := Summarize(rs)
					r.Ratio = &s
				}
			}
		}
		if f.Target != nil {
			v := r.Median
			ok := true
			if f.Target.Of == "ratio" {
				if r.Ratio == nil {
					ok = false
				} else {
					v = r.Ratio.Median
				}
			}
			met := ok && f.Target.Met(v)
			r.Met = &met
		}
		out = append(out, r)
	}
	return out
}

// groups returns the groups in first-seen order.
func groups(rs []Result) []string {
	var gs []string
	for _, r := range rs {
		if !slices.Contains(gs, r.Group) {
			gs = append(gs, r.Group)
		}
	}
	return gs
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// Markdown renders the tables of bench/README.md.
func Markdown(res Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# hostroute benchmarks\n\nRun %s on %s", res.Date, res.Machine)
	if res.Commit != "" {
		fmt.Fprintf(&b, " at commit %s", res.Commit)
	}
	b.WriteString(" by `make bench`. Every figure is the median of its runs, with min–max; a ratio is " +
		"taken round by round against the baseline named, measured in the same run, interleaved with it.\n\n" +
		"![ratios against their baselines](chart.svg)\n")
	for _, g := range groups(res.Figures) {
		fmt.Fprintf(&b, "\n## %s\n\n| what | median | min–max | runs | vs baseline | target |\n|---|---|---|---|---|---|\n", g)
		for _, r := range res.Figures {
			if r.Group != g {
				continue
			}
			ratio := ""
			if r.Ratio != nil {
				ratio = fmt.Sprintf("%s× %s (%s–%s)", num(r.Ratio.Median), r.Baseline, num(r.Ratio.Min), num(r.Ratio.Max))
			}
			target := ""
			if r.Target != nil {
				mark := "✘ missed"
				if r.Met != nil && *r.Met {
					mark = "✔ met"
				}
				target = fmt.Sprintf("%s %s %s", r.Target.Op, num(r.Target.Value), r.Target.Of)
				target = mark + " (" + target + ")"
			}
			name := r.Name
			if r.Note != "" {
				name += " — " + r.Note
			}
			fmt.Fprintf(&b, "| %s | %s %s | %s–%s | %d | %s | %s |\n", name, num(r.Median), r.Unit, num(r.Min), num(r.Max), len(r.Runs), ratio, target)
		}
	}
	return b.String()
}

// SVG renders every ratio as a horizontal bar, with the baseline at 1 and each target
// marked: the chart the top-level README shows.
func SVG(res Results) string {
	var rows []Result
	for _, r := range res.Figures {
		if r.Ratio != nil {
			rows = append(rows, r)
		}
	}
	const left, width, rowH, top = 360, 420, 22, 40
	maxV := 1.2
	for _, r := range rows {
		maxV = math.Max(maxV, r.Ratio.Max)
		if r.Target != nil && r.Target.Of == "ratio" {
			maxV = math.Max(maxV, r.Target.Value)
		}
	}
	maxV = math.Ceil(maxV*5) / 5
	x := func(v float64) float64 { return left + v/maxV*width }
	h := top + len(rows)*rowH + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+80, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">hostroute vs its baselines (ratio; baseline = 1, measured in the same run)</text>`+"\n")
	for i, r := range rows {
		y := float64(top + i*rowH)
		good := !r.LowerIsBetter && r.Ratio.Median >= 1 || r.LowerIsBetter && r.Ratio.Median <= 1
		color := "#d9822b"
		if good {
			color = "#2b8a3e"
		}
		label := html.EscapeString(fmt.Sprintf("%s: %s vs %s", r.Group, r.Name, r.Baseline))
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%s</text>`+"\n", left-6, y+14, label)
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y+3, x(r.Ratio.Median)-left, rowH-6, color)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="black"/>`+"\n", x(r.Ratio.Min), x(r.Ratio.Max), y+rowH/2, y+rowH/2)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%s×</text>`+"\n", x(math.Max(r.Ratio.Max, r.Ratio.Median))+4, y+14, num(r.Ratio.Median))
		if r.Target != nil && r.Target.Of == "ratio" {
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.0f" y2="%.0f" stroke="#c92a2a" stroke-width="2" stroke-dasharray="3,2"/>`+"\n", x(r.Target.Value), x(r.Target.Value), y+1, y+rowH-1)
		}
	}
	base := x(1)
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#555" stroke-dasharray="4,3"/>`+"\n", base, base, top-4, top+len(rows)*rowH)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">1 = baseline</text>`+"\n", base, top+len(rows)*rowH+16)
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#c92a2a">┆ target</text>`+"\n", left+width-60, top+len(rows)*rowH+16)
	b.WriteString("</svg>\n")
	return b.String()
}

// Write writes results.json, README.md and chart.svg into dir.
func Write(dir string, res Results) error {
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	for name, body := range map[string][]byte{
		"results.json": append(js, '\n'),
		"README.md":    []byte(Markdown(res)),
		"chart.svg":    []byte(SVG(res)),
	} {
		if err := os.WriteFile(dir+"/"+name, body, 0o644); err != nil {
			return fmt.Errorf("benchreport: %w", err)
		}
	}
	return nil
}
