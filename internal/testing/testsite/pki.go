package testsite

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/p7bundle/p7bundle/internal/testing/testregistry"
)

// ca is a throwaway certificate authority (ECDSA: key generation is instant,
// and every component here accepts it).
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(name string) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{cert: cert, key: key}, nil
}

// write stores the CA as <base>.crt and <base>.key.
func (c *ca) write(base string) error {
	if err := writePEM(base+".crt", "CERTIFICATE", c.cert.Raw, 0o644); err != nil {
		return err
	}
	return writeKey(base+".key", c.key)
}

// issueServer writes <base>.crt/.key for a server certificate valid for dns and ips.
func (c *ca) issueServer(base, cn string, dns []string, ips []net.IP) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return err
	}
	if err := writePEM(base+".crt", "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(base+".key", key)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// identity is an API client authenticated by a static token.
type identity struct {
	name, user, groups, token string
}

var identities = []identity{
	{name: "admin", user: "admin", groups: "system:masters"},
	{name: "controller-manager", user: "system:kube-controller-manager"},
	{name: "scheduler", user: "system:kube-scheduler"},
	{name: "kubelet", user: "system:node:" + NodeName, groups: "system:nodes"},
}

// writePKI generates the cluster CA, the apiserver certificate, the
// service-account key, the static token file with one kubeconfig per
// identity, and the registry's own CA, certificate and htpasswd file.
func (s *Site) writePKI() error {
	pki := filepath.Join(s.Dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	cluster, err := newCA("p7site-cluster-ca")
	if err != nil {
		return err
	}
	if err := cluster.write(filepath.Join(pki, "ca")); err != nil {
		return err
	}
	nodeIP := net.ParseIP(s.NodeIP)
	if err := cluster.issueServer(filepath.Join(pki, "apiserver"), "kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(serviceAPIIP), nodeIP}); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(pki, "sa.key"), saKey); err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(pki, "sa.pub"), "PUBLIC KEY", saPub, 0o644); err != nil {
		return err
	}

	var tokens []byte
	for i, id := range identities {
		id.token = randomHex(16)
		// token,user,uid[,"group1,group2"]
		tokens = fmt.Appendf(tokens, "%s,%s,%d", id.token, id.user, i+1)
		if id.groups != "" {
			tokens = fmt.Appendf(tokens, ",%q", id.groups)
		}
		tokens = append(tokens, '\n')
		kc := kubeconfig(s.APIServer, filepath.Join(pki, "ca.crt"), id.name, id.token)
		if err := os.WriteFile(filepath.Join(s.Dir, id.name+".kubeconfig"), []byte(kc), 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(pki, "tokens.csv"), tokens, 0o600); err != nil {
		return err
	}
	s.Kubeconfig = filepath.Join(s.Dir, "admin.kubeconfig")
	if s.opts.ControlPlaneOnly {
		return nil
	}

	reg, err := newCA("p7site-registry-ca")
	if err != nil {
		return err
	}
	if err := reg.write(filepath.Join(pki, "registry-ca")); err != nil {
		return err
	}
	if err := reg.issueServer(filepath.Join(pki, "registry"), s.NodeIP, []string{"localhost"},
		[]net.IP{nodeIP, net.IPv4(127, 0, 0, 1)}); err != nil {
		return err
	}
	s.RegistryCAFile = filepath.Join(pki, "registry-ca.crt")
	s.RegistryUsername = "p7site"
	s.RegistryPassword = randomHex(12)
	// MinCost: the registry checks bcrypt on every request; the password is throwaway.
	if s.RegistryToken != "" {
		// The token service checks the password; the registry the tokens.
		if _, err := testregistry.WriteTokenSigner(pki); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(pki, "registry-password"), []byte(s.RegistryPassword), 0o600)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(s.RegistryPassword), bcrypt.MinCost)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(pki, "htpasswd"), []byte(s.RegistryUsername+":"+string(hash)+"\n"), 0o600)
}

func kubeconfig(server, caFile, user, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: p7site
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: p7site
  context: {cluster: p7site, user: %s}
current-context: p7site
`, server, caFile, user, token, user)
}
