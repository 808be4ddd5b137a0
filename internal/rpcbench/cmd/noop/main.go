// Command noop is a Go program that does nothing: the cost of starting a Go process, the
// baseline the plugin RPC benchmark subtracts.
package main

func main() {}
