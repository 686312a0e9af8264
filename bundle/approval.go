package bundle

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/in-toto/in-toto-golang/in_toto"
	"github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/common"
	"github.com/opencontainers/go-digest"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const (
	// ApprovalPredicateType is the in-toto predicate type of an approval
	// (docs/SECURITY.md), the --type of `cosign verify-blob-attestation`.
	ApprovalPredicateType = "https://github.com/p7bundle/p7bundle/blob/main/docs/SECURITY.md#approval-v1"
	// ApprovalSuffix names the approvals file beside the bundle: one signed
	// DSSE envelope per line, one line per approval.
	ApprovalSuffix = ".approval.jsonl"
	// VerdictApproved is the one verdict there is: a rejection is the
	// absence of an approval.
	VerdictApproved = "approved"

	maxApprovalBytes = 16 << 20
)

// ApprovalPath is where the approvals of the bundle at path are kept.
func ApprovalPath(path string) string { return path + ApprovalSuffix }

// ErrApproval: an approval is missing, unsigned, signed by another key,
// expired, for another site or for another bundle.
var ErrApproval = errors.New("approval")

// Approval is the predicate an approver signs.
type Approval struct {
	Verdict string `json:"verdict"`
	// Sites the approval holds for; empty means every site.
	Sites []string `json:"sites,omitempty"`
	// NotBefore and NotAfter bound it (RFC 3339, UTC).
	NotBefore string `json:"notBefore"`
	NotAfter  string `json:"notAfter"`
	// Approver identifies the signing key: sha256:<hex> of its DER public
	// key, and the KMS URI when the key lives in one.
	Approver    string `json:"approver"`
	ApproverKMS string `json:"approverKMS,omitempty"`
	Note        string `json:"note,omitempty"`
	// Bundle is what was reviewed.
	Bundle ApprovedBundle `json:"bundle"`
	Tool   Tool           `json:"tool"`
}

// ApprovedBundle names the reviewed bundle beyond the statement's subject.
type ApprovedBundle struct {
	Chart          string `json:"chart"`
	ChartVersion   string `json:"chartVersion"`
	AppVersion     string `json:"appVersion"`
	ManifestDigest string `json:"manifestDigest"`
	// BOMDigest is the sha256 of the CycloneDX BOM `inspect --cyclonedx`
	// prints for the bundle: the inventory the approver saw.
	BOMDigest string `json:"bomDigest,omitempty"`
}

// ApprovalStatement is the in-toto statement whose subject is the bundle
// file (sha256 of its bytes: a renamed copy is the same bundle).
type ApprovalStatement struct {
	in_toto.StatementHeader
	Predicate Approval `json:"predicate"`
}

// ApproveOptions say what an approval covers.
type ApproveOptions struct {
	Sites               []string
	NotBefore, NotAfter time.Time
	Note                string
	// KMS is the approver's KMS URI, when the key lives in one.
	KMS       string
	BOMDigest string
	Tool      Tool
}

// KeyID identifies a public key: sha256:<hex> of its DER encoding.
func KeyID(s Signer) (string, error) {
	sum, err := publicKeyDigest(s)
	if err != nil {
		return "", fmt.Errorf("%w: public key: %v", ErrKey, err)
	}
	return "sha256:" + hex.EncodeToString(sum), nil
}

// Approve signs an approval of the bundle with manifest m, file name name
// and file digest fileDigest: one DSSE line to append to the approvals
// file. Key files sign deterministically, so the same inputs (times
// included) give the same line.
func Approve(ctx context.Context, s Signer, m *Manifest, name, fileDigest string, o ApproveOptions) ([]byte, error) {
	d := digest.Digest(fileDigest)
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("approval: bundle digest %q is not sha256", fileDigest)
	}
	if !o.NotAfter.After(o.NotBefore) {
		return nil, fmt.Errorf("%w: it would expire (%s) before it starts (%s)", ErrApproval, o.NotAfter.UTC().Format(time.RFC3339), o.NotBefore.UTC().Format(time.RFC3339))
	}
	md, err := m.Digest()
	if err != nil {
		return nil, err
	}
	id, err := KeyID(s)
	if err != nil {
		return nil, err
	}
	sites := slices.Clone(o.Sites)
	slices.Sort(sites)
	st := ApprovalStatement{
		StatementHeader: in_toto.StatementHeader{
			Type:          statementType,
			PredicateType: ApprovalPredicateType,
			Subject:       []in_toto.Subject{{Name: name, Digest: common.DigestSet{"sha256": d.Encoded()}}},
		},
		Predicate: Approval{
			Verdict:   VerdictApproved,
			Sites:     slices.Compact(sites),
			NotBefore: o.NotBefore.UTC().Truncate(time.Second).Format(time.RFC3339),
			NotAfter:  o.NotAfter.UTC().Truncate(time.Second).Format(time.RFC3339),
			Approver:  id, ApproverKMS: o.KMS, Note: o.Note,
			Bundle: ApprovedBundle{Chart: m.Chart.Name, ChartVersion: m.Chart.Version, AppVersion: m.Chart.AppVersion,
				ManifestDigest: md, BOMDigest: o.BOMDigest},
			Tool: o.Tool,
		},
	}
	return signStatement(ctx, s, "approval", st)
}

// ApprovalStatus is one line of an approvals file as checked.
type ApprovalStatus struct {
	Line int `json:"line"`
	// Approval is the signed predicate; nil when the line is unreadable.
	Approval *Approval `json:"approval,omitempty"`
	// Subject is the digest of the bundle file it approves.
	Subject string `json:"subject,omitempty"`
	// Digest is the sha256 of the line, to name it in records.
	Digest string `json:"digest"`
	// Key is the verifier (its name as given) whose key signed the line;
	// empty when none of those given did.
	Key string `json:"key,omitempty"`
	// Valid: signed by Key, of this bundle, in force now, for the site.
	Valid bool `json:"valid"`
	// Problem says why not.
	Problem string `json:"problem,omitempty"`
}

// CheckApprovals reads the approvals file at path and checks each line
// against the bundle's file digest and manifest digest, the site (""
// accepts any) and now, with every verifier given (by name). A line none
// of them signed is reported, not an error: it may be another approver's.
// An empty fileDigest skips the subject: where the file was not hashed
// (install reads only what it uses), the table of contents digest, which
// the bundle key signed and which names every blob, binds alone.
func CheckApprovals(ctx context.Context, path string, verifiers map[string]Verifier, fileDigest, manifestDigest, site string, now time.Time) ([]ApprovalStatus, error) {
	data, err := readLimited(path, maxApprovalBytes)
	if err != nil {
		return nil, fmt.Errorf("approvals %s: %w", path, err)
	}
	names := make([]string, 0, len(verifiers))
	for n := range verifiers {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []ApprovalStatus
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), maxApprovalBytes)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		st := ApprovalStatus{Line: n, Digest: digest.FromBytes(line).String()}
		st.Approval, st.Subject, st.Key, st.Problem = checkApproval(ctx, line, names, verifiers)
		if st.Problem == "" {
			st.Problem = approvalProblem(st.Approval, st.Subject, fileDigest, manifestDigest, site, now)
		}
		st.Valid = st.Problem == ""
		out = append(out, st)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrApproval, path, err)
	}
	return out, nil
}

// checkApproval verifies one line's signature with the first verifier that
// accepts it and decodes its predicate.
func checkApproval(ctx context.Context, line []byte, names []string, verifiers map[string]Verifier) (a *Approval, subject, key, problem string) {
	var env dsse.Envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return nil, "", "", "not a DSSE envelope: " + err.Error()
	}
	if env.PayloadType != InTotoPayloadType {
		return nil, "", "", fmt.Sprintf("payload type %q, want %q", env.PayloadType, InTotoPayloadType)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, "", "", "payload: " + err.Error()
	}
	var st ApprovalStatement
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, "", "", "statement: " + err.Error()
	}
	if st.PredicateType != ApprovalPredicateType {
		return nil, "", "", fmt.Sprintf("predicate type %q, want %q", st.PredicateType, ApprovalPredicateType)
	}
	a = &st.Predicate
	if len(st.Subject) != 1 || st.Subject[0].Digest["sha256"] == "" {
		return a, "", "", "the statement names no bundle digest"
	}
	subject = "sha256:" + st.Subject[0].Digest["sha256"]
	for _, name := range names {
		ev, err := dsse.NewEnvelopeVerifier(dsseVerifier{verifiers[name]})
		if err != nil {
			return a, subject, "", err.Error()
		}
		if _, err := ev.Verify(ctx, &env); err == nil {
			return a, subject, name, ""
		}
	}
	if len(names) == 0 {
		return a, subject, "", "not checked: no approver key given"
	}
	return a, subject, "", "signed by none of the keys given (approver " + a.Approver + ")"
}

// approvalProblem says why a signed approval does not hold, or "".
func approvalProblem(a *Approval, subject, fileDigest, manifestDigest, site string, now time.Time) string {
	if a.Verdict != VerdictApproved {
		return fmt.Sprintf("verdict %q", a.Verdict)
	}
	if (fileDigest != "" && subject != fileDigest) || a.Bundle.ManifestDigest != manifestDigest {
		return fmt.Sprintf("it approves another bundle (%s %s, %s)", a.Bundle.Chart, a.Bundle.ChartVersion, subject)
	}
	nb, err1 := time.Parse(time.RFC3339, a.NotBefore)
	na, err2 := time.Parse(time.RFC3339, a.NotAfter)
	switch {
	case err1 != nil || err2 != nil:
		return fmt.Sprintf("unreadable validity %q to %q", a.NotBefore, a.NotAfter)
	case now.Before(nb):
		return "not valid before " + a.NotBefore
	case !now.Before(na):
		return "expired at " + a.NotAfter
	}
	if site != "" && len(a.Sites) > 0 && !slices.Contains(a.Sites, site) {
		return fmt.Sprintf("for sites %s, not %s", strings.Join(a.Sites, ", "), site)
	}
	return ""
}

// RequireApprovals checks that every key in required (by name) signed a
// valid approval in statuses; the error names the first key without one,
// what is wrong with its lines, the bundle and the site.
func RequireApprovals(statuses []ApprovalStatus, required []string, bundleName, manifestDigest, site, path string) error {
	for _, key := range required {
		var problems []string
		valid := false
		for _, s := range statuses {
			if s.Key != key {
				continue
			}
			if s.Valid {
				valid = true
				break
			}
			problems = append(problems, fmt.Sprintf("line %d: %s", s.Line, s.Problem))
		}
		if valid {
			continue
		}
		why := "no line signed by it"
		if len(problems) > 0 {
			why = strings.Join(problems, "; ")
		}
		forSite := ""
		if site != "" {
			forSite = " for site " + site
		}
		return fmt.Errorf("%w: %s has not approved %s (table of contents %s)%s: %s in %s", ErrApproval, key, bundleName, manifestDigest, forSite, why, path)
	}
	return nil
}
