package layering

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/p7bundle/p7bundle/"

// forbidden lists, per package, what it must never import: other packages
// of this module (directly or not) and libraries of another layer
// (directly; Helm's chart engine pulls client-go in without using a cluster).
var forbidden = map[string][]string{
	"bundle":       {module + "mirror", module + "manifests", module + "installer", module + "builder", "k8s.io/client-go", "helm.sh/helm/v3", "oras.land/oras-go/v2/registry/remote"},
	"manifests":    {module + "mirror", module + "installer", module + "builder", "k8s.io/client-go", "helm.sh/helm/v3/pkg/action", "oras.land/oras-go/v2/registry/remote"},
	"mirror":       {module + "manifests", module + "installer", module + "builder", "k8s.io/client-go", "helm.sh/helm/v3"},
	"builder":      {module + "installer", "k8s.io/client-go", "helm.sh/helm/v3/pkg/action"},
	"installer":    {module + "builder"},
	"cmd/p7bundle": {},
}

// No product package may depend on the test harness.
const harness = module + "internal/testing"

func TestLayers(t *testing.T) {
	for pkg, bad := range forbidden {
		deps := goList(t, "-deps", "-f", "{{.ImportPath}}", module+pkg)
		direct := goList(t, "-f", `{{join .Imports "\n"}}`, module+pkg)
		for _, f := range append(bad, harness) {
			scope := direct
			if strings.HasPrefix(f, module) {
				scope = deps
			}
			for _, d := range scope {
				if d == f || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s imports %s", pkg, d)
				}
			}
		}
	}
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	list := strings.Fields(string(out))
	if len(list) < 3 {
		t.Fatalf("go list %v listed only %v", args, list)
	}
	return list
}
