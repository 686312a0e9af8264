package installer

import (
	"errors"
	"fmt"
	"io"
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
}

// resolved returns s with Host bare and Prefix final ("" = root).
func (s SiteRegistry) resolved() (SiteRegistry, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(s.Host, "https://"), "http://"), "/")
	if host == "" || strings.Contains(host, "/") {
		return s, fmt.Errorf("%w: site registry %q: want HOST[:PORT]", ErrOptions, s.Host)
	}
	s.Host = host
	switch s.Prefix {
	case "":
		s.Prefix = DefaultPrefix
	case "/":
		s.Prefix = ""
	default:
		s.Prefix = strings.Trim(s.Prefix, "/")
	}
	if s.Password != "" && s.Username == "" {
		return s, fmt.Errorf("%w: site registry %s: a password without a username", ErrOptions, host)
	}
	return s, nil
}

// Path is HOST/PREFIX, where the bundle's images go (resolved s only).
func (s SiteRegistry) Path() string { return manifests.SitePath(s.Host, s.Prefix) }

// Guard is the egress guard of every site action: the site registry on the
// port its scheme implies, plus the endpoints in extra (the API server).
func (s SiteRegistry) Guard(extra ...string) *egress.Guard {
	return egress.New(append([]string{egress.Endpoint(s.Host, s.PlainHTTP)}, extra...)...)
}

// client reaches the site registry, and through guard nothing else.
func (s SiteRegistry) client(guard *egress.Guard) (*mirror.Client, error) {
	return mirror.NewClient(mirror.RegistryOptions{
		PlainHTTP: s.PlainHTTP, CAFile: s.CAFile, Insecure: s.Insecure,
		Username: s.Username, Password: s.Password, DialContext: guard.DialContext,
	})
}

// Signature says how a bundle's signature is checked before it is trusted.
type Signature struct {
	// Key is the cosign public key; required unless InsecureSkipVerify.
	Key string
	// File is the signature; default BUNDLE.sig.
	File string
	// InsecureSkipVerify uses the bundle unchecked, with a loud warning.
	InsecureSkipVerify bool
}

// verify checks path's signature and returns what it verified (digest,
// manifest, chart); with InsecureSkipVerify it warns and returns nil.
func (s Signature) verify(path string, log io.Writer) (*bundle.Verified, error) {
	return verifyBundle(path, s.Key, s.File, s.InsecureSkipVerify, log)
}

// optional checks the signature when a key is given (values, lint) and
// otherwise says the chart is used unchecked.
func (s Signature) optional(path string, log io.Writer) (*bundle.Verified, error) {
	if s.Key == "" {
		fmt.Fprintf(log, "note: no key: the chart in %s is used without checking its signature\n", path)
		return nil, nil
	}
	return s.verify(path, log)
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
