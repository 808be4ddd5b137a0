package frr

import (
	"testing"

	"github.com/hostroute/hostroute/internal/testenv/netns"
)

func TestMain(m *testing.M) { netns.TestMain(m, "hrtest-frr-") }
