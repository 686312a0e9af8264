package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/egress"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// The defaults of the site actions: a zero field means these.
const (
	DefaultPrefix      = "pseven" // repository path under the site registry
	DefaultJobs        = 8        // concurrent uploads
	DefaultValuesFile  = "values.airgap.yaml"
	DefaultSecretsFile = "pseven-secrets.yaml"
	DefaultTimeout     = 60 * time.Minute // the guide's helm --timeout
	DefaultBackupDir   = "."
	// DefaultRestoredValuesFile is where restore-values writes.
	DefaultRestoredValuesFile = "values.restored.yaml"
)

// ErrOptions: an action was given options it cannot run with.
var ErrOptions = errors.New("invalid options")

// SiteRegistry is the registry inside the site that every site action
// pushes to, checks, and points the release at.
type SiteRegistry struct {
	// Host is HOST[:PORT]; an http:// or https:// prefix and a trailing
	// slash are tolerated.
	Host string
	// Prefix is the repository path under Host: DefaultPrefix when empty,
	// "/" to mirror at the root.
	Prefix             string
	Username, Password string
	CAFile             string
	Insecure           bool
	PlainHTTP          bool
	// AllowEndpoints are further HOST[:PORT]s the admin vouches for: a
	// token service or blob storage the registry names, under StrictEgress.
	AllowEndpoints []string
	// StrictEgress refuses the token service and blob storage the registry
	// names unless AllowEndpoints lists them.
	StrictEgress bool
}

// sitePrefix is the repository path given as Prefix: DefaultPrefix for
// "", none for "/".
func sitePrefix(p string) string {
	switch p {
	case "":
		return DefaultPrefix
	case "/":
		return ""
	}
	return strings.Trim(p, "/")
}

// resolved returns s with Host bare and Prefix final ("" = root).
func (s SiteRegistry) resolved() (SiteRegistry, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(s.Host, "https://"), "http://"), "/")
	if _, err := egress.ParseEndpoint(host); err != nil {
		return s, fmt.Errorf("%w: site registry %q: want HOST[:PORT]", ErrOptions, s.Host)
	}
	s.Host = host
	s.Prefix = sitePrefix(s.Prefix)
	if s.Password != "" && s.Username == "" {
		return s, fmt.Errorf("%w: site registry %s: a password without a username", ErrOptions, host)
	}
	allow := make([]string, 0, len(s.AllowEndpoints))
	for _, e := range s.AllowEndpoints {
		e, err := egress.ParseEndpoint(e)
		if err != nil {
			return s, fmt.Errorf("%w: --allow-endpoint: %v", ErrOptions, err)
		}
		allow = append(allow, e)
	}
	s.AllowEndpoints = allow
	return s, nil
}

// Path is HOST/PREFIX, where the bundle's images go (resolved s only).
func (s SiteRegistry) Path() string { return manifests.SitePath(s.Host, s.Prefix) }

// Guard is the egress guard of every site action: the site registry on the
// port its scheme implies (and the token service and blob storage it names,
// logged to log), AllowEndpoints, and the endpoints in extra (the API server).
func (s SiteRegistry) Guard(log io.Writer, extra ...string) *egress.Guard {
	return egress.New(egress.Options{
		Registry: egress.Endpoint(s.Host, s.PlainHTTP), Allow: append(append([]string{}, s.AllowEndpoints...), extra...),
		Strict: s.StrictEgress, Log: log,
	})
}

// client reaches the site registry, and through guard nothing else.
func (s SiteRegistry) client(guard *egress.Guard) (*mirror.Client, error) {
	return mirror.NewClient(mirror.RegistryOptions{
		PlainHTTP: s.PlainHTTP, CAFile: s.CAFile, Insecure: s.Insecure,
		Username: s.Username, Password: s.Password, Egress: guard,
	})
}

// checkCA reads --ca-file as the client will, so a bad one fails before
// the bundle is read (minutes for a large one) and before any dial.
func (s SiteRegistry) checkCA() error {
	if s.CAFile == "" {
		return nil
	}
	_, err := s.client(nil)
	return err
}

// Signature says how a bundle's signature is checked before it is trusted.
type Signature struct {
	// Key is the cosign public key; required unless InsecureSkipVerify.
	Key string
	// InsecureSkipVerify uses the bundle unchecked, with a loud warning.
	InsecureSkipVerify bool
	// RequireApprovals are approver keys (files or KMS URIs) that must each
	// have signed a valid approval of the bundle (p7bundle approve), for
	// Site when the approval names sites, before it is used.
	RequireApprovals []string
	Site             string
	// Approvals is the approvals file; default BUNDLE.approval.jsonl.
	Approvals string
}

// open opens the bundle and checks its table of contents signature: the
// signed manifest names the digest and size of every entry, and every
// entry is checked against it as it is read. With InsecureSkipVerify it
// warns and opens the bundle unchecked.
func (s Signature) open(ctx context.Context, path string, log io.Writer) (*bundle.Archive, error) {
	a, _, err := s.openApproved(ctx, path, log)
	return a, err
}

// Approved is an approval the bundle was used under: who, which line.
type Approved struct {
	// Key is the --require-approval key; Approver its sha256 identity.
	Key      string `json:"key"`
	Approver string `json:"approver"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	// Digest is the sha256 of the signed line, to find it again.
	Digest   string `json:"digest"`
	NotAfter string `json:"notAfter"`
	Note     string `json:"note,omitempty"`
}

// openApproved is open, also returning the approvals RequireApprovals
// were met with.
func (s Signature) openApproved(ctx context.Context, path string, log io.Writer) (*bundle.Archive, []Approved, error) {
	if s.InsecureSkipVerify {
		fmt.Fprintf(log, "WARNING: --insecure-skip-verify: the signature of %s is NOT checked; anyone who could change the file chooses what runs at this site\n", path)
		a, err := bundle.Open(path)
		return a, nil, err
	}
	if s.Key == "" {
		return nil, nil, fmt.Errorf("%w: no --key: refusing to use an unverified bundle (--insecure-skip-verify overrides)", bundle.ErrKey)
	}
	v, err := bundle.LoadVerifier(ctx, s.Key)
	if err != nil {
		return nil, nil, err
	}
	approvers := map[string]bundle.Verifier{}
	for _, ref := range s.RequireApprovals {
		if approvers[ref], err = bundle.LoadVerifier(ctx, ref); err != nil {
			return nil, nil, err
		}
	}
	a, err := bundle.OpenVerified(path, v)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(log, "signature of %s verified with %s\n", path, s.Key)
	var approved []Approved
	if len(approvers) > 0 {
		if approved, err = s.checkApprovals(ctx, path, a.Manifest(), approvers, log); err != nil {
			a.Close()
			return nil, nil, err
		}
	}
	return a, approved, nil
}

// checkApprovals requires a valid approval by every RequireApprovals key,
// matched by the signed table of contents' digest, and logs each one used.
func (s Signature) checkApprovals(ctx context.Context, path string, m *bundle.Manifest, approvers map[string]bundle.Verifier, log io.Writer) ([]Approved, error) {
	file := s.Approvals
	if file == "" {
		file = bundle.ApprovalPath(bundle.Name(path))
	}
	md, err := m.Digest()
	if err != nil {
		return nil, err
	}
	var statuses []bundle.ApprovalStatus
	if _, err := os.Stat(file); err == nil || s.Approvals != "" {
		if statuses, err = bundle.CheckApprovals(ctx, file, approvers, "", md, s.Site, time.Now()); err != nil {
			return nil, err
		}
	}
	if err := bundle.RequireApprovals(statuses, s.RequireApprovals, filepath.Base(path), md, s.Site, file); err != nil {
		return nil, err
	}
	var approved []Approved
	for _, ref := range s.RequireApprovals {
		for _, st := range statuses {
			if st.Valid && st.Key == ref {
				a := Approved{Key: ref, Approver: st.Approval.Approver, File: file, Line: st.Line,
					Digest: st.Digest, NotAfter: st.Approval.NotAfter, Note: st.Approval.Note}
				approved = append(approved, a)
				fmt.Fprintf(log, "approval: %s line %d by %s (%s), valid until %s\n", file, st.Line, ref, a.Approver, a.NotAfter)
				break
			}
		}
	}
	return approved, nil
}

// optional checks the signature when a key is given (values, lint) and
// otherwise says the chart is used unchecked.
func (s Signature) optional(ctx context.Context, path string, log io.Writer) (a *bundle.Archive, verified bool, err error) {
	if s.Key == "" {
		if a, err = bundle.Open(path); err != nil {
			return nil, false, err
		}
		fmt.Fprintf(log, "note: no key: the chart in %s is used without checking its signature\n", path)
		return a, false, nil
	}
	a, err = s.open(ctx, path, log)
	return a, err == nil, err
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
