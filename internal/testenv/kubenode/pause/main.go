// Command pause is the sandbox ("pause") container of the lab's kubelet node: it holds
// the pod's namespaces open until the runtime stops it. It is built statically and
// packaged as a local image, so a lab node never pulls registry.k8s.io/pause.
//
// As PID 1 of the sandbox's PID namespace it also reaps orphans, which matters only
// for pods that share their process namespace.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
