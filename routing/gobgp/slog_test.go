package gobgp

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

type nilStringer struct{ s string }

func (n *nilStringer) String() string { return n.s } // panics on a nil receiver

func TestSlogLoggerFatalAndPanicReturn(t *testing.T) {
	rec := &gbLogs{}
	l := newSlogLogger(slog.New(rec), nil)
	l.Fatal("failed to create routing policy", gobgplog.Fields{"Error": errors.New("boom")})
	l.Panic("code logic bug", gobgplog.Fields{"Key": "192.0.2.1"})
	// Reaching this line is the test: logrus would have exited or panicked.
	if rec.count("ERROR failed to create routing policy", "gobgp_severity=fatal", "Error=boom") != 1 ||
		rec.count("ERROR code logic bug", "gobgp_severity=panic", "Key=192.0.2.1") != 1 {
		t.Errorf("logged:\n%s", strings.Join(rec.lines, "\n"))
	}
}

func TestSlogLoggerLevelsAndFields(t *testing.T) {
	rec := &gbLogs{}
	l := newSlogLogger(slog.New(rec), nil)
	if l.GetLevel() != gobgplog.InfoLevel {
		t.Errorf("default level %v", l.GetLevel())
	}
	l.Debug("hidden", nil)
	var np *nilStringer
	l.Info("shown", gobgplog.Fields{"b": 2, "a": &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 179}, "n": np, "s": &nilStringer{"x"}})
	l.SetLevel(gobgplog.WarnLevel)
	l.Info("hidden too", nil)
	l.Warn("warned", nil)
	l.SetLevel(gobgplog.DebugLevel)
	l.Debug("debug now", nil)
	if l.GetLevel() != gobgplog.DebugLevel {
		t.Errorf("level %v after SetLevel(Debug)", l.GetLevel())
	}
	if rec.count("hidden") != 0 || rec.count("WARN warned") != 1 || rec.count("DEBUG debug now") != 1 ||
		rec.count("INFO shown component=gobgp a=192.0.2.1:179 b=2 n=<nil> s=x") != 1 {
		t.Errorf("logged:\n%s", strings.Join(rec.lines, "\n"))
	}
}

// The adapter taps why sessions fail, whatever the log level.
func TestSlogLoggerTapsPeerErrors(t *testing.T) {
	got := map[string]string{}
	l := newSlogLogger(slog.New(&gbLogs{}), func(addr, reason string) { got[addr] = reason })
	l.SetLevel(gobgplog.ErrorLevel)
	l.Info("Peer Down", gobgplog.Fields{"Key": "192.0.2.1", "Reason": "hold-timer-expired"})
	l.Debug("failed to connect", gobgplog.Fields{"Key": "192.0.2.2", "Error": errors.New("connection refused")})
	l.Info("Peer Up", gobgplog.Fields{"Key": "192.0.2.3"})
	if len(got) != 2 || got["192.0.2.1"] != "hold-timer-expired" || got["192.0.2.2"] != "connection refused" {
		t.Errorf("tapped %v", got)
	}
}
