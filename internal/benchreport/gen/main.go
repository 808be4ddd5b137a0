// Command gen turns the figures `make bench` recorded (benchreport.Record, one JSON line
// each) into bench/results.json, bench/README.md and bench/chart.svg.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/hostroute/hostroute/internal/benchreport"
)

func main() {
	in := flag.String("in", "bench/raw.jsonl", "the recorded figures")
	out := flag.String("out", "bench", "where to write results.json, README.md and chart.svg")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench/gen:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	figs, err := benchreport.Read(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(figs) == 0 {
		return fmt.Errorf("%s: no figures recorded", in)
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	res := benchreport.Results{
		Date:    time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Machine: fmt.Sprintf("Linux %s, %d cores, %s", strings.TrimSpace(string(kernel)), runtime.NumCPU(), runtime.Version()),
		Commit:  strings.TrimSpace(string(commit)),
		Figures: benchreport.Build(figs),
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := benchreport.Write(out, res); err != nil {
		return err
	}
	fmt.Printf("bench: %d figures → %s/results.json, README.md, chart.svg\n", len(figs), out)
	return nil
}
