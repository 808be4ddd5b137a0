// Command hostroute-cni is hostroute's CNI plugin. The container runtime runs it for
// each pod sandbox (ADD, DEL, CHECK, GC, STATUS, VERSION); see package node/cni.
package main

import hrcni "github.com/hostroute/hostroute/node/cni"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() { hrcni.Main("hostroute-cni " + version) }
