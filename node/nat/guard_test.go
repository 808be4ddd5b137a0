package nat

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// guardRules is what nft(8) prints for the pod guard's rules, chain by chain, with the
// counters' figures blanked. `oif 0` is how nft 1.0.6 prints `oif missing` (the same
// comparison of the result register with 0).
var guardRules = map[string][]string{
	ChainPodPrerouting: {
		`iifname "hr*" icmpv6 type nd-router-advert accept`,
		`iifname "hr*" icmpv6 type nd-neighbor-solicit accept`,
		`iifname "hr*" fib saddr . iif oif 0 counter packets N bytes N drop`,
	},
	ChainPodInput: {
		`iifname "hr*" tcp dport 179 counter packets N bytes N drop`,
		`iifname "hr*" udp dport 3784 counter packets N bytes N drop`,
		`iifname "hr*" udp dport 3785 counter packets N bytes N drop`,
		`iifname "hr*" udp dport 4784 counter packets N bytes N drop`,
	},
}

var figures = regexp.MustCompile(`(packets|bytes) \d+`)

// checkGuard asserts that the pod guard chains hold exactly guardRules, as nft lists
// them: the rules must mean to the kernel what guard.go says (a wrong register length
// or byte order shows up here as a different listing).
func checkGuard(t *testing.T, ns string) {
	t.Helper()
	for chain, want := range guardRules {
		out := mustExec(t, ns, "nft", "list", "chain", "inet", TableName, chain)
		var got []string
		for _, line := range strings.Split(out, "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "iifname") {
				got = append(got, figures.ReplaceAllString(line, "$1 N"))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("chain %s rules =\n\t%s\nwant\n\t%s\nlisting:\n%s", chain,
				strings.Join(got, "\n\t"), strings.Join(want, "\n\t"), out)
		}
	}
}
