// Package gobgp is the routing.Speaker of hostroute-node: an embedded GoBGP v3
// BgpServer driven through its Go API. It translates routing.PeerConfig into GoBGP
// neighbours (make-before-break on changes), routing.Policy into GoBGP's global
// import/export policy (policy.go), reads best paths with the equal-cost set GoBGP's API
// does not give, logs the routes the import policy rejects (hijack.go), and adapts
// GoBGP's logger to log/slog (slog.go).
//
// Hazard: GoBGP keeps package-level state that every StartBgp overwrites, so one
// process runs one Speaker (or several with the same settings, as the tests do).
package gobgp
