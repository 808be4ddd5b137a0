package harness

import (
	"fmt"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/hostroute/hostroute/api/client"
	"github.com/hostroute/hostroute/internal/manifest"
)

// Namespace is where the shipped manifests put hostroute's ServiceAccounts.
const Namespace = "hostroute-system"

// shippedAccess are the manifests that decide what hostroute's identities may do: the
// tests apply exactly these, so a rule missing from them fails a test.
var shippedAccess = []string{"namespace.yaml", "node/rbac.yaml", "node/admission.yaml", "controller/rbac.yaml"}

// tokenLifetime outlives any test or lab session.
const tokenLifetime = 48 * 3600

// InstallAccess applies the shipped namespace, RBAC and admission policy.
func (e *Env) InstallAccess() {
	e.T.Helper()
	a, err := manifest.NewApplier(e.Cluster.RESTConfig())
	if err != nil {
		e.T.Fatal(err)
	}
	if err := a.ApplyFiles(e.Ctx, shippedAccess...); err != nil {
		e.T.Fatalf("applying the shipped RBAC and admission policy: %v", err)
	}
}

// AgentToken creates the Pod object the DaemonSet would have on node (ServiceAccount
// hostroute-node, spec.nodeName set, tolerating everything) and returns a token bound to
// it, as the kubelet's projected token is: the API server adds the node-name claim the
// admission policy checks, and the token dies with the pod.
func (e *Env) AgentToken(node string) (string, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hostroute-node-" + node, Namespace: Namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "hostroute-node-process"}},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: "hostroute-node",
			HostNetwork:        true,
			Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers:         []corev1.Container{{Name: "agent", Image: "hostroute/hostroute:dev"}},
		},
	}
	got, err := e.Kube.CoreV1().Pods(Namespace).Create(e.Ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("agent pod for %s: %w", node, err)
	}
	return e.token("hostroute-node", &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: got.Name, UID: got.UID})
}

// PodToken returns a token of the pod's ServiceAccount bound to the pod: the identity
// the pod's own projected token carries (for tools run "in" a pod the tests cannot exec
// into, such as the kubelet node's agent).
func (e *Env) PodToken(pod *corev1.Pod) (string, error) {
	return e.token(pod.Spec.ServiceAccountName, &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID})
}

// ServiceAccountToken returns a token for one of hostroute's ServiceAccounts that is not
// bound to any pod (no node-name claim).
func (e *Env) ServiceAccountToken(sa string) (string, error) { return e.token(sa, nil) }

func (e *Env) token(sa string, bound *authv1.BoundObjectReference) (string, error) {
	exp := int64(tokenLifetime)
	tr, err := e.Kube.CoreV1().ServiceAccounts(Namespace).CreateToken(e.Ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp, BoundObjectRef: bound}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", Namespace, sa, err)
	}
	return tr.Status.Token, nil
}

// WriteKubeconfig writes a kubeconfig for the API server at server with token.
func WriteKubeconfig(path, server, token string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "user"}
	kc.CurrentContext = "lab"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// As returns a client config for the API server with token instead of the admin's.
func (e *Env) As(token string) *rest.Config {
	cfg := e.Cluster.RESTConfig()
	cfg.BearerToken = token
	return cfg
}

// Clients returns both API clients for a token.
func (e *Env) Clients(token string) (kubernetes.Interface, *client.Client, error) {
	cfg := e.As(token)
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	hr, err := client.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return kube, hr, nil
}
