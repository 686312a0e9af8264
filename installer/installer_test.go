package installer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/p7bundle/p7bundle/bundle"
)

func node(name, ip string, mem, cpu string, controlPlane bool) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if controlPlane {
		n.Labels["node-role.kubernetes.io/control-plane"] = ""
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	n.Status.Capacity = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(mem), corev1.ResourceCPU: resource.MustParse(cpu)}
	return n
}

func TestNodeSizingFollowsTheGuide(t *testing.T) {
	// The guide: replicas = workers, memory = half a worker's RAM, cpu = half its CPUs.
	_, s := nodeSizing([]corev1.Node{
		node("cp", "10.0.0.1", "8Gi", "4", true),
		node("w1", "10.0.0.2", "16Gi", "8", false),
		node("w2", "10.0.0.3", "32Gi", "16", false),
	})
	if s.Workers != 2 || s.MemoryMi != 8192 || s.CPUMilli != 4000 {
		t.Errorf("sizing = %+v, want 2 workers, 8192Mi, 4000m (the smallest worker)", s)
	}
	// A single control-plane node (a test site) counts as the worker.
	nodes, s := nodeSizing([]corev1.Node{node("only", "198.18.0.2", "4Gi", "2", true)})
	if s.Workers != 1 || s.MemoryMi != 2048 || s.CPUMilli != 1000 || !nodes[0].Worker {
		t.Errorf("single node sizing = %+v", s)
	}
}

func TestParseSecretsNeverQuotesContent(t *testing.T) {
	secret := "s3cr3t-value-xyz"
	_, err := parseSecrets("pseven-secrets.yaml", []byte("key: [unclosed "+secret))
	if !errors.Is(err, ErrSecrets) || strings.Contains(err.Error(), secret) {
		t.Errorf("parseSecrets = %v", err)
	}
	if _, err := parseSecrets("x", []byte("")); !errors.Is(err, ErrSecrets) {
		t.Errorf("empty secrets accepted: %v", err)
	}
	m, err := parseSecrets("x", []byte("secrets:\n  a: b\n"))
	if err != nil || m["secrets"] == nil {
		t.Errorf("parseSecrets = %v, %v", m, err)
	}
}

func TestWriteNewSecretFileNeverOverwrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pseven-secrets.yaml")
	if err := writeNewSecretFile(p, []byte("a: 1\n")); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	if err := writeNewSecretFile(p, []byte("a: 2\n")); !errors.Is(err, ErrSecrets) {
		t.Errorf("second write = %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "a: 1\n" {
		t.Errorf("file changed to %q", b)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestAPIEndpoint(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://198.18.0.2:6443"}}, {name: d, cluster: {server: "https://api.site"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}, {name: d, context: {cluster: d, user: u}}]
current-context: c
`), 0o600)
	for ctx, want := range map[string]string{"": "198.18.0.2:6443", "d": "api.site:443"} {
		got, err := apiEndpoint(kc, ctx)
		if err != nil || got != want {
			t.Errorf("apiEndpoint(context %q) = %q, %v; want %q", ctx, got, err, want)
		}
	}
	if _, err := apiEndpoint(filepath.Join(t.TempDir(), "none"), ""); !errors.Is(err, ErrPreflight) {
		t.Errorf("missing kubeconfig: %v", err)
	}
}

// install --plain-http --registry HOST (no port) dials HOST:80; the guard
// every site command uses must allow exactly that (it once allowed :443 only).
func TestSiteGuardFollowsTheScheme(t *testing.T) {
	for _, tc := range []struct {
		registry string
		plain    bool
		allow    []string
		deny     []string
	}{
		{"registry.local", true, []string{"registry.local:80", "api:6443"}, []string{"registry.local:443", "registry.pseven.io:443"}},
		{"registry.local", false, []string{"registry.local:443"}, []string{"registry.local:80"}},
		{"registry.local:5000", true, []string{"registry.local:5000"}, []string{"registry.local:80", "registry.local:443"}},
		{"[fd00::1]", true, []string{"[fd00::1]:80"}, []string{"[fd00::1]:443"}},
	} {
		g := SiteRegistry{Host: tc.registry, PlainHTTP: tc.plain}.Guard(nil, "api:6443")
		for _, a := range tc.allow {
			if !g.Allows(a) {
				t.Errorf("SiteGuard(%s, plain=%v) refuses %s", tc.registry, tc.plain, a)
			}
		}
		for _, d := range tc.deny {
			if g.Allows(d) {
				t.Errorf("SiteGuard(%s, plain=%v) allows %s", tc.registry, tc.plain, d)
			}
		}
	}
}

// Carried vendor signatures live in their image's repository; as bundle
// images they would give it a second tag, and an upgrade could no longer
// tell which tag to move carried values to.
func TestBundleImagesLeaveSignaturesOut(t *testing.T) {
	m := &bundle.Manifest{Images: []bundle.Image{
		{Ref: "registry.pseven.io/pseven-app:6.50", Digest: "sha256:a2"},
		{Ref: "registry.pseven.io/pseven-app:sha256-a2.sig", Digest: "sha256:5e", Signs: "sha256:a2"},
	}}
	if got := bundleImages(m); len(got) != 1 || got[0] != "registry.pseven.io/pseven-app:6.50@sha256:a2" {
		t.Fatalf("bundleImages = %q", got)
	}
}

// --allow-endpoint is checked before anything is dialed, and what it names
// is allowed beside the site registry.
func TestSiteAllowEndpoints(t *testing.T) {
	s, err := SiteRegistry{Host: "registry.corp:5000", AllowEndpoints: []string{"GitLab.corp", "minio.corp:9000"}, StrictEgress: true}.resolved()
	if err != nil {
		t.Fatal(err)
	}
	g := s.Guard(nil)
	for _, a := range []string{"registry.corp:5000", "gitlab.corp:443", "minio.corp:9000"} {
		if !g.Allows(a) {
			t.Errorf("refuses %s", a)
		}
	}
	if g.Allows("minio.corp:443") {
		t.Error("allows minio.corp:443")
	}
	for _, bad := range []string{"https://gitlab.corp", "minio.corp:0", "gitlab.corp/jwt/auth"} {
		_, err := SiteRegistry{Host: "registry.corp", AllowEndpoints: []string{bad}}.resolved()
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "--allow-endpoint") || !strings.Contains(err.Error(), bad) {
			t.Errorf("--allow-endpoint %s: %v", bad, err)
		}
	}
}

// Without any kubeconfig client-go would dial localhost:8080; the site
// commands say what they looked for instead.
func TestNoKubeconfig(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := apiEndpoint("", "")
	if !errors.Is(err, ErrPreflight) || !strings.Contains(err.Error(), "no kubeconfig found") || !strings.Contains(err.Error(), ".kube/config") {
		t.Fatalf("apiEndpoint without a kubeconfig: %v", err)
	}
}
