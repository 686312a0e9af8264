package policy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func write(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

const site = `site: plant-a
signingKeys: [/etc/p7bundle/vendor.pub]
approvalKeys: [/etc/p7bundle/security.pub]
allowedRegistries: ["registry.corp:5000"]
`

func TestLoad(t *testing.T) {
	p, err := Load(write(t, site, 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if p.Site != "plant-a" || len(p.SigningKeys) != 1 || len(p.ApprovalKeys) != 1 || p.AllowSkipDoctor {
		t.Errorf("read %+v", p)
	}
	for name, tc := range map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"group writable": {site, 0o664, "group or others may write it (mode 0664): run chmod go-w"},
		"world writable": {site, 0o606, "mode 0606"},
		"unknown field":  {site + "allowEverything: true\n", 0o600, `unknown field "allowEverything"`},
		"not yaml":       {"site: [\n", 0o600, "policy.yaml"},
	} {
		_, err := Load(write(t, tc.body, tc.mode))
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrPolicy) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing policy: %v", err)
	}
}

func TestApply(t *testing.T) {
	p, err := Load(write(t, site, 0o600))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Apply(Flags{Registry: "registry.corp:5000", RequireApprovals: []string{"change.pub"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != "/etc/p7bundle/vendor.pub" || got.Site != "plant-a" || !slices.Equal(got.RequireApprovals, []string{"change.pub", "/etc/p7bundle/security.pub"}) {
		t.Errorf("applied: %+v", got)
	}
	for name, tc := range map[string]struct {
		f    Flags
		want string
	}{
		"skip verify":    {Flags{InsecureSkipVerify: true}, "--insecure-skip-verify is not allowed"},
		"skip doctor":    {Flags{SkipDoctor: true}, "--skip-doctor is not allowed"},
		"another key":    {Flags{Key: "mine.pub"}, "--key mine.pub is not one of its signing keys"},
		"another site":   {Flags{Site: "plant-b"}, "--site plant-b, but this site is plant-a"},
		"other registry": {Flags{Registry: "evil.example:443"}, "--registry evil.example:443 is not one of its registries"},
	} {
		if _, err := p.Apply(tc.f); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	lax := &Policy{Path: "lax.yaml", AllowInsecureSkipVerify: true, AllowSkipDoctor: true, ApprovalKeys: []string{"security.pub"}}
	if _, err := lax.Apply(Flags{InsecureSkipVerify: true}); err == nil || !strings.Contains(err.Error(), "approvals are required") {
		t.Errorf("skip verify with approvals required: %v", err)
	}
	if got, err := (&Policy{Path: "x", AllowSkipDoctor: true}).Apply(Flags{SkipDoctor: true, Key: "k.pub"}); err != nil || got.Key != "k.pub" {
		t.Errorf("an allowed flag: %+v %v", got, err)
	}
}
