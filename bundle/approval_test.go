package bundle

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestApprovals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	security, securityPub := testKeys(t, filepath.Join(mkdir(t, dir, "security")))
	change, changePub := testKeys(t, filepath.Join(mkdir(t, dir, "change")))
	f := newFixture(t)
	res := f.write(t, filepath.Join(dir, "b.tar.zst"), security, 0)
	md, err := f.manifest.Digest()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	opts := ApproveOptions{Sites: []string{"plant-b", "plant-a", "plant-a"}, NotBefore: start, NotAfter: start.Add(30 * 24 * time.Hour),
		Note: "CAB-1234", BOMDigest: "sha256:" + strings.Repeat("b", 64), Tool: Tool{Name: "p7bundle", Version: "test"}}
	line, err := Approve(ctx, security, f.manifest, "b.tar.zst", res.Digest, opts)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Approve(ctx, security, f.manifest, "renamed.tar.zst", res.Digest, opts)
	if again2, _ := Approve(ctx, security, f.manifest, "renamed.tar.zst", res.Digest, opts); !bytes.Equal(again, again2) {
		t.Error("the same approval signed twice differs: not reproducible")
	}
	other := opts
	other.Sites = nil
	byChange, err := Approve(ctx, change, f.manifest, "b.tar.zst", res.Digest, other)
	if err != nil {
		t.Fatal(err)
	}
	otherBundle, _ := Approve(ctx, security, f.manifest, "b.tar.zst", "sha256:"+strings.Repeat("0", 64), opts)
	tampered := tamperPayload(t, line, `"plant-a"`, `"plant-z"`)
	if _, err := Approve(ctx, security, f.manifest, "b.tar.zst", res.Digest, ApproveOptions{NotBefore: start, NotAfter: start}); err == nil {
		t.Error("an approval that expires as it starts was signed")
	}

	path := filepath.Join(dir, "b.tar.zst"+ApprovalSuffix)
	if err := os.WriteFile(path, bytes.Join([][]byte{line, byChange, otherBundle, tampered, []byte("{not json\n")}, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := map[string]Verifier{"security.pub": securityPub, "change.pub": changePub}
	check := func(site string, now time.Time, keys map[string]Verifier) []ApprovalStatus {
		t.Helper()
		got, err := CheckApprovals(ctx, path, keys, res.Digest, md, site, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 {
			t.Fatalf("%d lines checked, want 5: %+v", len(got), got)
		}
		return got
	}
	expect := func(got ApprovalStatus, key, problem string) {
		t.Helper()
		if got.Key != key || !strings.Contains(got.Problem, problem) || got.Valid != (problem == "") || (problem == "" && got.Problem != "") {
			t.Errorf("line %d: key %q valid %v problem %q; want key %q problem %q", got.Line, got.Key, got.Valid, got.Problem, key, problem)
		}
	}
	now := start.Add(time.Hour)
	got := check("plant-a", now, keys)
	expect(got[0], "security.pub", "")
	expect(got[1], "change.pub", "")
	expect(got[2], "security.pub", "it approves another bundle")
	expect(got[3], "", "signed by none of the keys given")
	expect(got[4], "", "not a DSSE envelope")
	if a := got[0].Approval; a.Approver == "" || strings.Join(a.Sites, ",") != "plant-a,plant-b" || a.Note != "CAB-1234" || a.Bundle.ManifestDigest != md || got[0].Subject != res.Digest {
		t.Errorf("approval read back: %+v, subject %s", a, got[0].Subject)
	}

	expect(check("plant-c", now, keys)[0], "security.pub", "for sites plant-a, plant-b, not plant-c")
	expect(check("plant-c", now, keys)[1], "change.pub", "") // approved for every site
	expect(check("", now, keys)[0], "security.pub", "")
	expect(check("plant-a", start.Add(-time.Second), keys)[0], "security.pub", "not valid before 2026-12-01T09:00:00Z")
	expect(check("plant-a", start.Add(30*24*time.Hour), keys)[0], "security.pub", "expired at 2026-12-31T09:00:00Z")
	expect(check("plant-a", now, map[string]Verifier{"change.pub": changePub})[0], "", "signed by none of the keys given (approver sha256:")
	expect(check("plant-a", now, nil)[0], "", "not checked: no approver key given")

	if _, err := CheckApprovals(ctx, filepath.Join(dir, "missing"), keys, res.Digest, md, "", now); err == nil {
		t.Error("a missing approvals file gave no error")
	}
}

func mkdir(t *testing.T, parts ...string) string {
	t.Helper()
	p := filepath.Join(parts...)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// tamperPayload rewrites the signed statement inside an envelope line,
// keeping its signature.
func tamperPayload(t *testing.T, line []byte, old, new string) []byte {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(line, &env); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(payload), old) {
		t.Fatalf("payload has no %s", old)
	}
	env["payload"] = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(payload), old, new, 1)))
	b, _ := json.Marshal(env)
	return append(b, '\n')
}
