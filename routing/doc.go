// Package routing is hostroute's BGP: a Speaker interface with an embedded GoBGP v3
// implementation and an in-memory fake, the pure computation of a node's peer set from
// the cluster's BGP resources, the import/export policy that keeps a node from hijacking
// another node's blocks, and BFD (RFC 5880/5881), which GoBGP v3 lacks.
package routing
