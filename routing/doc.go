// Package routing is hostroute's BGP without a BGP implementation: the Speaker interface
// the node agent drives, the pure computation of a node's peer set from the cluster's
// BGP resources, and the import/export policy that keeps a node from hijacking another
// node's blocks. The speakers live elsewhere: routing/gobgp embeds GoBGP v3,
// routing/routingtest is an in-memory fake for tests; routing/bfd is BFD (RFC 5880/5881),
// which GoBGP v3 lacks.
package routing
