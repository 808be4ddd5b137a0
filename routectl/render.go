package routectl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// table writes aligned columns the way kubectl does (three spaces between columns).
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(headers...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() { _ = t.tw.Flush() }

// printObject writes v as JSON or YAML (the output flag decides).
func printObject(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", format, err)
	}
	return writeEncoded(w, format, b)
}

// printProto writes a protobuf message with protojson's field names, so that the JSON
// is the gRPC API's own.
func printProto(w io.Writer, format string, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", format, err)
	}
	return writeEncoded(w, format, b)
}

func writeEncoded(w io.Writer, format string, jsonBytes []byte) error {
	if format == "yaml" {
		y, err := yaml.JSONToYAML(jsonBytes)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		_, err = w.Write(y)
		return err
	}
	_, err := fmt.Fprintf(w, "%s\n", jsonBytes)
	return err
}

// age is kubectl's human duration ("5m", "3h12m"); "-" for the zero time.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(now.Sub(t))
}

func percent(inUse, capacity int32) string {
	if capacity <= 0 {
		return "-"
	}
	return fmt.Sprintf("%d%%", int(inUse)*100/int(capacity))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
