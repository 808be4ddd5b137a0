package gobgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// slogLogger adapts log/slog to GoBGP's pkg/log.Logger.
//
// Hazards it exists to defuse:
//   - GoBGP calls Fatal on paths it then recovers from (a policy it cannot build, a
//     failed AddPeer from config): logrus would os.Exit the whole agent. Fatal and
//     Panic here only log at error level and return; the GoBGP code after those calls
//     is "unreachable" bookkeeping that copes with returning.
//   - GoBGP guards a few hot debug logs with GetLevel(), so GetLevel must report the
//     level really wanted, or it formats every dial attempt.
//   - Field values are GoBGP internals (paths, messages, *net.TCPAddr): they are turned
//     into strings so a JSON handler never tries to marshal them.
//
// It also taps two messages to learn why sessions fail, which the GoBGP API does not
// expose: "Peer Down" (field Reason) and "failed to connect" (field Error, only logged at
// debug level). Those texts are GoBGP internals; if they change, LastError stays empty.
type slogLogger struct {
	l     *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel
	// onPeerError is called with the neighbour address and the reason; it must not call
	// into the BgpServer (it runs on FSM goroutines, sometimes under their locks).
	onPeerError func(addr, reason string)
}

var _ gobgplog.Logger = (*slogLogger)(nil)

// newSlogLogger returns an adapter at info level. onPeerError may be nil.
func newSlogLogger(l *slog.Logger, onPeerError func(addr, reason string)) *slogLogger {
	if l == nil {
		l = slog.Default()
	}
	s := &slogLogger{l: l, onPeerError: onPeerError}
	s.level.Store(uint32(gobgplog.InfoLevel))
	return s
}

// NewLogger returns GoBGP's logger interface writing to l, for embedding GoBGP
// elsewhere (e.g. a test harness). Fatal and Panic log and return.
func NewLogger(l *slog.Logger) gobgplog.Logger { return newSlogLogger(l, nil) }

func (s *slogLogger) Panic(msg string, f gobgplog.Fields) {
	s.emit(gobgplog.PanicLevel, slog.LevelError, msg, f, "panic")
}

func (s *slogLogger) Fatal(msg string, f gobgplog.Fields) {
	s.emit(gobgplog.FatalLevel, slog.LevelError, msg, f, "fatal")
}

func (s *slogLogger) Error(msg string, f gobgplog.Fields) {
	s.emit(gobgplog.ErrorLevel, slog.LevelError, msg, f, "")
}

func (s *slogLogger) Warn(msg string, f gobgplog.Fields) {
	s.emit(gobgplog.WarnLevel, slog.LevelWarn, msg, f, "")
}

func (s *slogLogger) Info(msg string, f gobgplog.Fields) {
	s.tap(msg, f, "Reason")
	s.emit(gobgplog.InfoLevel, slog.LevelInfo, msg, f, "")
}

func (s *slogLogger) Debug(msg string, f gobgplog.Fields) {
	s.tap(msg, f, "Error")
	s.emit(gobgplog.DebugLevel, slog.LevelDebug, msg, f, "")
}

func (s *slogLogger) SetLevel(level gobgplog.LogLevel) { s.level.Store(uint32(level)) }

func (s *slogLogger) GetLevel() gobgplog.LogLevel { return gobgplog.LogLevel(s.level.Load()) }

func (s *slogLogger) tap(msg string, f gobgplog.Fields, key string) {
	if s.onPeerError == nil || (msg != "Peer Down" && msg != "failed to connect") {
		return
	}
	addr, _ := f["Key"].(string)
	if addr == "" {
		return
	}
	if v, ok := f[key]; ok {
		s.onPeerError(addr, stringify(v))
	}
}

func (s *slogLogger) emit(gl gobgplog.LogLevel, sl slog.Level, msg string, f gobgplog.Fields, severity string) {
	if gl > s.GetLevel() {
		return
	}
	ctx := context.Background()
	if !s.l.Enabled(ctx, sl) {
		return
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys)+2)
	attrs = append(attrs, slog.String("component", "gobgp"))
	if severity != "" {
		attrs = append(attrs, slog.String("gobgp_severity", severity))
	}
	for _, k := range keys {
		attrs = append(attrs, attr(k, f[k]))
	}
	s.l.LogAttrs(ctx, sl, msg, attrs...)
}

func attr(k string, v any) slog.Attr {
	switch v := v.(type) {
	case string:
		return slog.String(k, v)
	case bool:
		return slog.Bool(k, v)
	case int:
		return slog.Int(k, v)
	case int64:
		return slog.Int64(k, v)
	case uint32:
		return slog.Uint64(k, uint64(v))
	case uint64:
		return slog.Uint64(k, v)
	case float64:
		return slog.Float64(k, v)
	}
	return slog.String(k, stringify(v))
}

// stringify formats v with fmt, which also survives a String or Error method panicking
// on a nil receiver.
func stringify(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}
