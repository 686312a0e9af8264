package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p7bundle/p7bundle/bundle"
)

// The security team's approval: approve verifies first, appends one signed
// line per approval, stock cosign verifies a line against the bundle, and
// verify --approver-key fails (exit 5) unless that key approved exactly
// this bundle for the site, now.
func TestApprove(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	for _, who := range []string{"security", "change", "impostor"} {
		if r := p7(t, "", "keygen", "--output-prefix", filepath.Join(s.dir, who)); r.code != 0 {
			t.Fatal(r)
		}
	}
	key := func(who string) string { return filepath.Join(s.dir, who+".key") }
	pub := func(who string) string { return filepath.Join(s.dir, who+".pub") }
	approvals := bundle.ApprovalPath(out)
	approve := func(who string, extra ...string) result {
		return p7(t, "", append([]string{"approve", out, "--key", key(who), "--bundle-key", s.pub}, extra...)...)
	}

	r := approve("security", "--site", "plant-a", "--site", "plant-b", "--note", "CAB-1234", "--not-before", "2026-01-01T00:00:00Z", "--expires", "3650d")
	if r.code != 0 || !strings.Contains(r.stdout, "Approved "+out) || !strings.Contains(r.stdout, "for:      plant-a, plant-b") || !strings.Contains(r.stdout, "(line 1)") {
		t.Fatalf("approve: %v", r)
	}
	if r := approve("change", "--not-before", "2026-01-01T00:00:00Z", "--expires", "3650d"); r.code != 0 || !strings.Contains(r.stdout, "(line 2)") {
		t.Fatalf("second approver: %v", r)
	}
	lines := bytes.Split(bytes.TrimSpace(mustRead(t, approvals)), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%s holds %d lines, want 2", approvals, len(lines))
	}
	// Reproducible but for the times the approver chose.
	again := filepath.Join(s.dir, "again.jsonl")
	if r := approve("security", "--site", "plant-b", "--site", "plant-a", "--note", "CAB-1234", "--not-before", "2026-01-01T00:00:00Z", "--expires", "3650d", "-o", again); r.code != 0 {
		t.Fatal(r)
	}
	if got := bytes.TrimSpace(mustRead(t, again)); !bytes.Equal(got, lines[0]) {
		t.Errorf("the same approval signed again differs:\n%s\n%s", got, lines[0])
	}

	// Stock cosign verifies an approval line against the bundle file.
	cs := newCosign(t, t.TempDir())
	line1 := filepath.Join(s.dir, "approval-1.json")
	os.WriteFile(line1, lines[0], 0o644)
	args := []string{"verify-blob-attestation", "--key", pub("security"), "--type", bundle.ApprovalPredicateType, "--signature", line1, "--insecure-ignore-tlog", out}
	o, err := cs.run(args...)
	if err != nil {
		t.Fatalf("cosign %v: %v\n%s", args, err, o)
	}
	t.Logf("cosign %s:\n%s", strings.Join(args, " "), o)
	if o, err := cs.run("verify-blob-attestation", "--key", pub("impostor"), "--type", bundle.ApprovalPredicateType, "--signature", line1, "--insecure-ignore-tlog", out); err == nil {
		t.Errorf("cosign verified the approval with another key:\n%s", o)
	}

	verify := func(extra ...string) result {
		return p7(t, "", append([]string{"verify", out, "--key", s.pub}, extra...)...)
	}
	r = verify("--approver-key", pub("security"), "--approver-key", pub("change"), "--site", "plant-a")
	if r.code != 0 || strings.Count(r.stdout, ": valid\n") != 2 || !strings.Contains(r.stdout, `note "CAB-1234"`) {
		t.Fatalf("verify with both approvers: %v", r)
	}
	t.Logf("verify --approver-key:\n%s", r.stdout)
	r = verify("--approvals", "--json")
	var rep bundle.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || len(rep.Approvals) != 2 || rep.Approvals[0].Approval.Approver == "" ||
		rep.Approvals[0].Valid || rep.Approvals[0].Problem != "not checked: no approver key given" {
		t.Errorf("verify --approvals --json (no keys: listed, not checked): %v", r)
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"another site":        {[]string{"--approver-key", pub("security"), "--site", "plant-c"}, "approval: none valid by " + pub("security") + " of " + out},
		"an approver missing": {[]string{"--approver-key", pub("impostor")}, "approval: none valid by " + pub("impostor")},
		"not yet valid":       {[]string{"--approver-key", pub("security"), "--approvals-file", writeApproval(t, approve, "security", "--not-before", "2099-01-01T00:00:00Z")}, "approval: none valid by"},
		"tampered approval":   {[]string{"--approver-key", pub("security"), "--approvals-file", tamperedCopy(t, approvals)}, "approval: none valid by"},
		"expired":             {[]string{"--approver-key", pub("change"), "--approvals-file", writeApproval(t, approve, "change", "--not-before", "2026-01-01T00:00:00Z", "--expires", "1s")}, "approval: none valid by"},
	} {
		r := verify(tc.args...)
		if r.code != exitVerify || !strings.Contains(lastLine(r.stderr), tc.want) {
			t.Errorf("%s: %v\nwant exit %d and %q", name, r, exitVerify, tc.want)
		}
		t.Logf("%s: %s", name, lastLine(r.stderr))
	}

	if r := verify("--approver-key", pub("security"), "--approvals-file", filepath.Join(s.dir, "none.jsonl")); r.code != exitInput || !strings.Contains(lastLine(r.stderr), "none.jsonl") {
		t.Errorf("missing approvals file: %v", r)
	}

	// Another bundle under the approved one's name does not pass.
	otherOut := filepath.Join(s.dir, "other", filepath.Base(out))
	os.MkdirAll(filepath.Dir(otherOut), 0o755)
	if r := s.build(t, otherOut, "--exclude", s.up.Images[0].Ref); r.code != 0 {
		t.Fatalf("build of another bundle: %v", r)
	}
	copyFile(t, approvals, bundle.ApprovalPath(otherOut))
	r = p7(t, "", "verify", otherOut, "--key", s.pub, "--approver-key", pub("security"))
	if r.code != exitVerify || !strings.Contains(r.stdout, "NOT VALID: it approves another bundle") {
		t.Errorf("approvals of another bundle: %v", r)
	}

	// approve refuses what does not verify, and appends nothing.
	tampered := filepath.Join(s.dir, "tampered.tar.zst")
	copyFile(t, out, tampered)
	copyFile(t, out+".sig", tampered+".sig")
	copyFile(t, out+bundle.ProvenanceSuffix, tampered+bundle.ProvenanceSuffix)
	flipByte(t, tampered, 4096)
	r = p7(t, "", "approve", tampered, "--key", key("security"), "--bundle-key", s.pub)
	if r.code != exitVerify || !strings.HasPrefix(lastLine(r.stderr), "p7bundle: approve:") {
		t.Errorf("approve of a tampered bundle: %v", r)
	}
	os.Remove(out + bundle.ProvenanceSuffix)
	r = approve("security")
	if r.code != exitVerify || !strings.Contains(lastLine(r.stderr), "no provenance") {
		t.Errorf("approve without provenance: %v", r)
	}
	if _, err := os.Stat(bundle.ApprovalPath(tampered)); !os.IsNotExist(err) {
		t.Error("a refused approval wrote a file")
	}
	if n := len(bytes.Split(bytes.TrimSpace(mustRead(t, approvals)), []byte("\n"))); n != 2 {
		t.Errorf("refused approvals appended: %d lines", n)
	}
	if r := approve("security", "--expires", "soon"); r.code != exitUsage || !strings.Contains(r.stderr, `--expires "soon"`) {
		t.Errorf("bad --expires: %v", r)
	}
}

// writeApproval approves into a file of its own and returns its path.
func writeApproval(t *testing.T, approve func(string, ...string) result, who string, extra ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "approval.jsonl")
	if r := approve(who, append(extra, "-o", path)...); r.code != 0 {
		t.Fatalf("approve %v: %v", extra, r)
	}
	return path
}

// tamperedCopy changes the sites inside the first approval, keeping its
// signature.
func tamperedCopy(t *testing.T, path string) string {
	t.Helper()
	lines := bytes.SplitN(mustRead(t, path), []byte("\n"), 2)
	out := filepath.Join(t.TempDir(), "tampered.jsonl")
	var env map[string]any
	if err := json.Unmarshal(lines[0], &env); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	if !bytes.Contains(payload, []byte(`"plant-a"`)) {
		t.Fatalf("approval names no plant-a: %s", payload)
	}
	env["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte(`"plant-a"`), []byte(`"plant-z"`), 1))
	b, _ := json.Marshal(env)
	os.WriteFile(out, append(b, '\n'), 0o644)
	return out
}

// flipByte inverts one byte of the file at path.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// push --require-approval: nothing reaches the site registry unless every
// required key approved exactly this bundle, for this site, now.
func TestRequireApproval(t *testing.T) {
	s := startSite(t)
	out := filepath.Join(s.dir, "pseven-2023.09.25.tar.zst")
	if r := s.build(t, out); r.code != 0 {
		t.Fatalf("build: %v", r)
	}
	for _, who := range []string{"security", "change"} {
		if r := p7(t, "", "keygen", "--output-prefix", filepath.Join(s.dir, who)); r.code != 0 {
			t.Fatal(r)
		}
	}
	key := func(who string) string { return filepath.Join(s.dir, who+".key") }
	pub := func(who string) string { return filepath.Join(s.dir, who+".pub") }
	approve := func(who string, extra ...string) {
		t.Helper()
		if r := p7(t, "", append([]string{"approve", out, "--key", key(who), "--bundle-key", s.pub}, extra...)...); r.code != 0 {
			t.Fatalf("approve: %v", r)
		}
	}
	reg := startSiteRegistry(t)
	push := func(bundlePath string, extra ...string) result {
		return p7(t, reg.Password+"\n", pushArgs(reg, bundlePath, s.pub, extra...)...)
	}
	refused := func(name, want string, bundlePath string, extra ...string) {
		t.Helper()
		r := push(bundlePath, extra...)
		if r.code != exitVerify || !strings.Contains(lastLine(r.stderr), want) {
			t.Errorf("%s: %v\nwant exit %d and %q", name, r, exitVerify, want)
		}
		if tags := allTags(t, reg); len(tags) != 0 {
			t.Fatalf("%s: a refused push tagged %v", name, tags)
		}
		t.Logf("%s: %s", name, lastLine(r.stderr))
	}
	req := []string{"--require-approval", pub("security")}

	refused("no approvals", pub("security")+" has not approved pseven-2023.09.25.tar.zst", out, req...)
	approve("security", "--site", "plant-a", "--note", "CAB-7")
	refused("another site", "line 1: for sites plant-a, not plant-b", out, append(req, "--site", "plant-b")...)
	expired := filepath.Join(s.dir, "expired.jsonl")
	approve("security", "--not-before", "2026-01-01T00:00:00Z", "--expires", "1h", "-o", expired)
	refused("expired", "line 1: expired at 2026-01-01T01:00:00Z", out, append(req, "--approvals", expired)...)
	refused("tampered", "no line signed by it", out, append(req, "--approvals", tamperedCopy(t, bundle.ApprovalPath(out)))...)
	refused("a second approver missing", pub("change")+" has not approved", out, append(req, "--require-approval", pub("change"), "--site", "plant-a")...)

	// Another bundle under this one's name, with this one's approvals.
	other := filepath.Join(s.dir, "other", filepath.Base(out))
	os.MkdirAll(filepath.Dir(other), 0o755)
	if r := s.build(t, other, "--exclude", s.up.Images[0].Ref); r.code != 0 {
		t.Fatalf("build of another bundle: %v", r)
	}
	copyFile(t, bundle.ApprovalPath(out), bundle.ApprovalPath(other))
	refused("another bundle", "line 1: it approves another bundle", other, append(req, "--site", "plant-a")...)

	if r := push(out, append(req, "--insecure-skip-verify")...); r.code != exitUsage || !strings.Contains(r.stderr, "contradict") {
		t.Errorf("--require-approval with --insecure-skip-verify: %v", r)
	}
	// A site policy requires what the flags leave out, and forbids.
	writePolicy := func(mode os.FileMode, body string) string {
		path := filepath.Join(t.TempDir(), "policy.yaml")
		os.WriteFile(path, []byte(body), mode)
		os.Chmod(path, mode)
		return path
	}
	strict := fmt.Sprintf("site: plant-b\nsigningKeys: [%s]\napprovalKeys: [%s]\nallowedRegistries: [%q]\n", s.pub, pub("security"), reg.Host)
	policyPush := func(policyPath string, extra ...string) result {
		args := []string{"push", out, "--policy", policyPath, "--registry", reg.Host, "--ca-file", reg.CAFile,
			"--registry-username", reg.Username, "--registry-password-stdin"}
		return p7(t, reg.Password+"\n", append(args, extra...)...)
	}
	for name, tc := range map[string]struct {
		policy string
		extra  []string
		code   int
		want   string
	}{
		"policy writable by others":      {writePolicy(0o666, strict), nil, exitInput, "group or others may write it (mode 0666)"},
		"policy: approval for plant-a":   {writePolicy(0o600, strict), nil, exitVerify, "for site plant-b: line 1: for sites plant-a, not plant-b"},
		"policy: --insecure-skip-verify": {writePolicy(0o600, strict), []string{"--insecure-skip-verify"}, exitInput, "--insecure-skip-verify is not allowed at this site"},
		"policy: another signing key":    {writePolicy(0o600, strict), []string{"--key", pub("change")}, exitInput, "is not one of its signing keys"},
		"policy: another site flag":      {writePolicy(0o600, strict), []string{"--site", "plant-a"}, exitInput, "--site plant-a, but this site is plant-b"},
		"policy: registry not allowed":   {writePolicy(0o600, strings.Replace(strict, reg.Host, "registry.corp:5000", 1)), nil, exitInput, "--registry " + reg.Host + " is not one of its registries"},
	} {
		r := policyPush(tc.policy, tc.extra...)
		if r.code != tc.code || !strings.Contains(lastLine(r.stderr), tc.want) {
			t.Errorf("%s: %v\nwant exit %d and %q", name, r, tc.code, tc.want)
		}
		if tags := allTags(t, reg); len(tags) != 0 {
			t.Fatalf("%s: a refused push tagged %v", name, tags)
		}
		t.Logf("%s: %s", name, lastLine(r.stderr))
	}

	approve("change")
	if r := policyPush(writePolicy(0o600, strings.Replace(strict, "plant-b", "plant-a", 1))); r.code != 0 || !strings.Contains(r.stderr, "line 1 by "+pub("security")) {
		t.Fatalf("push under a policy the bundle meets: %v", r)
	}
	r := push(out, append(req, "--require-approval", pub("change"), "--site", "plant-a")...)
	if r.code != 0 || !strings.Contains(r.stderr, "approval: "+bundle.ApprovalPath(out)+" line 1 by "+pub("security")) ||
		!strings.Contains(r.stderr, "line 2 by "+pub("change")) {
		t.Fatalf("push with both approvals: %v", r)
	}
	if tags := allTags(t, reg); len(tags) == 0 {
		t.Error("the approved push tagged nothing")
	}

	// A split set: approved through its first part, the approvals sit
	// beside the joined name, as the provenance does, and install from
	// parts.json finds them.
	split := filepath.Join(s.dir, "split", "pseven-2023.09.25.tar.zst")
	os.MkdirAll(filepath.Dir(split), 0o755)
	if r := s.build(t, split, "--split-size", "8Mi"); r.code != 0 {
		t.Fatalf("split build: %v", r)
	}
	if r := p7(t, "", "approve", split+".001", "--key", key("security"), "--bundle-key", s.pub); r.code != 0 {
		t.Fatalf("approve of a split set: %v", r)
	}
	if _, err := os.Stat(bundle.ApprovalPath(split)); err != nil {
		t.Fatalf("approvals of a split set: %v", err)
	}
	if r := push(split+".parts.json", req...); r.code != 0 {
		t.Fatalf("push of the approved split set: %v", r)
	}
}
