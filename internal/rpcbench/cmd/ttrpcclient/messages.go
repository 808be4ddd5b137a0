//go:build !rpcbench_nogrpc

package main

import agentv1 "github.com/hostroute/hostroute/api/agent/v1"

// The agentv1 messages; with rpcbench_nogrpc, agent.pb.go itself defines these names here.
type (
	AllocateRequest  = agentv1.AllocateRequest
	AllocateResponse = agentv1.AllocateResponse
	Attachment       = agentv1.Attachment
)
