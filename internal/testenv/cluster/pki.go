package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the cluster's certificate authority and the apiserver's serving
// certificate, signed by it.
//
// Why not the apiserver's own self-signed certificate (--cert-dir)? In-cluster
// clients verify the apiserver against the ca.crt the kubelet puts into every
// pod (from kube-controller-manager's --root-ca-file), and they dial whatever
// KUBERNETES_SERVICE_HOST says: in the lab that is 127.0.0.1:6443 inside a
// node namespace, forwarded to the apiserver. So the certificate must carry
// that loopback address, the Service IP and the kubernetes.default names, and
// its CA must be a file we can hand to the controller-manager.
type pki struct {
	CAFile   string // PEM certificate of the CA
	CertFile string // PEM serving certificate (leaf only)
	KeyFile  string // PEM private key of the serving certificate
	CAPEM    []byte
}

// serviceIP is the first address of --service-cluster-ip-range, the ClusterIP
// of the `kubernetes` Service.
const serviceIP = "10.96.0.1"

// servingNames are the DNS names in-cluster clients use for the apiserver.
func servingNames() []string {
	return []string{
		"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local",
	}
}

// servingIPs returns the addresses the serving certificate is valid for: the
// bind address, loopback (the lab's per-namespace proxy) and the Service IP.
func servingIPs(address string) []net.IP {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP), net.IPv6loopback}
	if ip := net.ParseIP(address); ip != nil && !ip.IsLoopback() {
		ips = append(ips, ip)
	}
	return ips
}

// writePKI creates a CA and a serving certificate for address under dir/pki.
// ECDSA P-256 keeps generation well under a millisecond.
func writePKI(dir, address string) (*pki, error) {
	d := filepath.Join(dir, "pki")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hostroute-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     servingNames(),
		IPAddresses:  servingIPs(address),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	p := &pki{
		CAFile:   filepath.Join(d, "ca.crt"),
		CertFile: filepath.Join(d, "apiserver.crt"),
		KeyFile:  filepath.Join(d, "apiserver.key"),
		CAPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{p.CAFile, p.CAPEM, 0o644},
		{p.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{p.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return p, nil
}
