package routectl

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hostroute/hostroute/api/v1alpha1"
	"github.com/hostroute/hostroute/routing"
)

// PeerSelection is one BGPPeer and the nodes that peer with it (JSON of `routectl peers`).
type PeerSelection struct {
	Peer  v1alpha1.BGPPeer `json:"peer"`
	Nodes []string         `json:"nodes"`
}

func newPeersCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "peers",
		Short: "The configured BGPPeers and which nodes peer with each",
		Long: `peers lists the BGPPeers (ToR switches, route servers) and, for each, the nodes that
peer with it, computed exactly as the agents compute their neighbours. A peer that selects
no node is listed with none; with --node, only the peers of that node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validateOutput(); err != nil {
				return err
			}
			hr, kube, err := o.api()
			if err != nil {
				return err
			}
			ctx, cancel := o.ctx(cmd)
			defer cancel()
			peers, err := hr.BGPPeers.List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list BGPPeers: %w", err)
			}
			nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("list Nodes: %w", err)
			}
			var conf *v1alpha1.BGPConfiguration
			if c, err := hr.BGPConfigurations.Get(ctx, "default"); err == nil {
				conf = c
			}
			sel := selectPeers(peers.Items, nodes.Items, conf)
			if o.node != "" {
				sel = peersOfNode(sel, o.node)
			}
			if o.output == "json" || o.output == "yaml" {
				for i := range sel {
					sel[i].Peer.ManagedFields = nil
				}
				return printObject(o.out, o.output, sel)
			}
			renderPeers(o.out, sel, len(nodes.Items), o.wide())
			return nil
		},
	}
}

// selectPeers runs routing.ComputePeers for every node. Secrets are not read (routectl
// need not see passwords): every referenced key is assumed present, so a peer with a
// password counts as selected; a missing Secret shows as a BGPConfigProblem Event on the
// node instead.
func selectPeers(peers []v1alpha1.BGPPeer, nodes []corev1.Node, conf *v1alpha1.BGPConfiguration) []PeerSelection {
	in := routing.PeerInputs{Config: conf, Secrets: map[string]string{}}
	for i := range peers {
		in.Peers = append(in.Peers, &peers[i])
		if r := peers[i].Spec.PasswordSecretRef; r != nil {
			in.Secrets[r.Namespace+"/"+r.Name+"/"+r.Key] = "assumed"
		}
	}
	for i := range nodes {
		in.Nodes = append(in.Nodes, &nodes[i])
	}
	selected := map[string][]string{}
	for _, n := range nodes {
		set, err := routing.ComputePeers(n.Name, in)
		if err != nil {
			continue // the node cannot run BGP (no address): it peers with nobody
		}
		for _, p := range set.Peers {
			if p.Kind == routing.KindExternal {
				selected[p.Name] = append(selected[p.Name], n.Name)
			}
		}
	}
	out := make([]PeerSelection, 0, len(peers))
	for _, p := range peers {
		out = append(out, PeerSelection{Peer: p, Nodes: append([]string{}, selected[p.Name]...)})
	}
	return out
}

func peersOfNode(sel []PeerSelection, node string) []PeerSelection {
	var out []PeerSelection
	for _, s := range sel {
		for _, n := range s.Nodes {
			if n == node {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func renderPeers(w io.Writer, sel []PeerSelection, totalNodes int, wide bool) {
	headers := []string{"NAME", "PEER IP", "AS", "BFD", "NODES"}
	if wide {
		headers = []string{"NAME", "PEER IP", "AS", "BFD", "PASSWORD", "MULTIHOP", "SELECTOR", "NODES"}
	}
	t := newTable(w, headers...)
	for _, s := range sel {
		sp := s.Peer.Spec
		bfd := "off"
		if sp.BFD != nil && sp.BFD.Enabled {
			bfd = "on"
		}
		nodes := strings.Join(s.Nodes, ",")
		switch {
		case len(s.Nodes) == 0:
			nodes = "(none)"
		case len(s.Nodes) == totalNodes && totalNodes > 1:
			nodes = fmt.Sprintf("all %d: %s", totalNodes, nodes)
		}
		if !wide {
			nodes = truncate(nodes, 80)
			t.row(s.Peer.Name, sp.PeerIP, fmt.Sprint(sp.ASNumber), bfd, nodes)
			continue
		}
		pw := "-"
		if r := sp.PasswordSecretRef; r != nil {
			pw = r.Namespace + "/" + r.Name + "[" + r.Key + "]"
		}
		selector := "(every node)"
		if sp.NodeSelector != nil {
			selector = metav1.FormatLabelSelector(sp.NodeSelector)
		}
		t.row(s.Peer.Name, sp.PeerIP, fmt.Sprint(sp.ASNumber), bfd, pw, fmt.Sprint(sp.EBGPMultihop), selector, nodes)
	}
	t.flush()
}
