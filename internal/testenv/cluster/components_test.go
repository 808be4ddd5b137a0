package cluster

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/hostroute/hostroute/internal/testenv"
)

func TestTokenLine(t *testing.T) {
	for _, tc := range []struct {
		user   string
		groups []string
		want   string
	}{
		{"admin", []string{"system:masters"}, "tok,admin,admin,\"system:masters\"\n"},
		{"system:node:n1", []string{"system:nodes", "x"}, "tok,system:node:n1,system:node:n1,\"system:nodes,x\"\n"},
		{"system:kube-scheduler", nil, "tok,system:kube-scheduler,system:kube-scheduler\n"},
	} {
		if got := tokenLine("tok", tc.user, tc.groups); got != tc.want {
			t.Errorf("tokenLine(%s, %v) = %q, want %q", tc.user, tc.groups, got, tc.want)
		}
	}
}

func TestValidateUsers(t *testing.T) {
	for _, tc := range []struct {
		users []User
		want  string // substring of the error; "" = valid
	}{
		{[]User{{Name: NodeUser("n1"), Groups: []string{NodesGroup}}}, ""},
		{[]User{{Name: "a"}, {Name: "a"}}, "given twice"},
		{[]User{{Name: "admin"}}, "given twice"},
		{[]User{{Name: "a,b"}}, "without commas"},
		{[]User{{Name: "a", Groups: []string{"g\""}}}, "group"},
		{[]User{{Name: ""}}, "non-empty"},
	} {
		err := validateUsers(tc.users)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("validateUsers(%v): %v, want no error", tc.users, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("validateUsers(%v): %v, want an error containing %q", tc.users, err, tc.want)
		}
	}
}

// TestComponents runs the control plane a lab kubelet needs: ServiceAccount
// admission, the controller-manager's minimal controllers and the scheduler.
// It checks what the kubelet node relies on: the CA in kube-root-ca.crt verifies
// the apiserver at 127.0.0.1, a node user is confined to its node by the Node
// authorizer (no Secret of another pod), a DaemonSet gets a pod and the scheduler binds it.
func TestComponents(t *testing.T) {
	node := "kn1"
	c := StartForTest(t, Options{
		CRDDir:                  "-",
		Users:                   []User{{Name: NodeUser(node), Groups: []string{NodesGroup}}},
		ServiceAccountAdmission: true,
		Controllers:             MinimalControllers(),
		Scheduler:               true,
	})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	kube := kubernetes.NewForConfigOrDie(c.RESTConfig())

	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "kube-root-ca.crt in default holding the cluster CA", func() string {
		cm, err := kube.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if strings.TrimSpace(cm.Data["ca.crt"]) != strings.TrimSpace(string(ca)) {
			return "ca.crt differs from " + c.CAFile
		}
		return ""
	})
	testenv.Eventually(t, 60*time.Second, "ServiceAccount default/default", func() string {
		_, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return testenv.ErrText(err)
	})

	// The node user's kubeconfig verifies the serving certificate (no
	// insecure flag) and the Node authorizer lets it at its own node only.
	kc, err := clientcmd.BuildConfigFromFlags("", c.Users[NodeUser(node)].Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if kc.Insecure || len(kc.CAData) == 0 {
		t.Fatalf("node kubeconfig: insecure=%v, CA %d bytes; want verification against the cluster CA", kc.Insecure, len(kc.CAData))
	}
	nodeKube := kubernetes.NewForConfigOrDie(kc)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"lab": "yes"}}}
	n.Status.Capacity = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("10")}
	n.Status.Allocatable = n.Status.Capacity
	if _, err := nodeKube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("node user creating its own Node: %v", err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: "default"}}
	if _, err := kube.CoreV1().Secrets("default").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := nodeKube.CoreV1().Secrets("default").Get(ctx, "unrelated", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node user reading a Secret no pod of its node uses: got %v, want Forbidden", err)
	}

	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "probe"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "probe"}},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"lab": "yes"},
					Tolerations:  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers:   []corev1.Container{{Name: "c", Image: "registry.invalid/probe"}},
				},
			},
		},
	}
	if _, err := kube.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "DaemonSet pod bound to "+node+" with a projected token volume", func() string {
		pods, err := kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=probe"})
		if err != nil {
			return err.Error()
		}
		if len(pods.Items) != 1 {
			return "pods: " + strconv.Itoa(len(pods.Items))
		}
		p := pods.Items[0]
		if p.Spec.NodeName != node {
			return "pod " + p.Name + " on node " + p.Spec.NodeName
		}
		for _, v := range p.Spec.Volumes {
			if strings.HasPrefix(v.Name, "kube-api-access-") && v.Projected != nil {
				return ""
			}
		}
		return "pod " + p.Name + " has no kube-api-access volume"
	})

	pids := map[string]int{}
	for _, p := range c.procs {
		pids[p.Name] = p.PID()
	}
	if len(pids) != 4 {
		t.Fatalf("processes %v, want etcd, kube-apiserver, kube-controller-manager, kube-scheduler", pids)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (PID %d) still exists after Stop (kill -0: %v)", name, pid, err)
		}
	}
}
