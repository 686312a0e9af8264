// Package release signs a directory of p7bundle release binaries the way
// bundles are signed: SHA256SUMS, its cosign-compatible signature, and a
// signed SLSA provenance whose subjects are the binaries, so a site checks
// the binary it is about to run with stock sha256sum and cosign.
package release

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/in-toto/in-toto-golang/in_toto"
	slsa1 "github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/v1"
	"github.com/opencontainers/go-digest"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/atomicfile"
)

// Files written beside the binaries.
const (
	SumsFile       = "SHA256SUMS"
	SigFile        = SumsFile + ".sig"
	ProvenanceFile = "p7bundle.intoto.jsonl"
	// BuildType describes Parameters (docs/SECURITY.md, Release).
	BuildType = "https://github.com/p7bundle/p7bundle/blob/main/docs/SECURITY.md#release"
)

// Parameters are the release's external parameters.
type Parameters struct {
	Version   string   `json:"version"`
	Commit    string   `json:"commit,omitempty"`
	Platforms []string `json:"platforms"`
}

// Sign writes SHA256SUMS over every p7bundle-* file in dir, its signature
// and the provenance. Identical binaries give identical files.
func Sign(ctx context.Context, dir string, s bundle.Signer, params Parameters) error {
	names, err := filepath.Glob(filepath.Join(dir, "p7bundle-*"))
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("release: no p7bundle-* binaries in %s", dir)
	}
	sort.Strings(names)
	var sums strings.Builder
	var subjects []in_toto.Subject
	for _, n := range names {
		sum, err := sha256File(n)
		if err != nil {
			return err
		}
		fmt.Fprintf(&sums, "%s  %s\n", sum, filepath.Base(n))
		subjects = append(subjects, in_toto.Subject{Name: filepath.Base(n), Digest: map[string]string{"sha256": sum}})
	}
	if err := atomicfile.Write(filepath.Join(dir, SumsFile), []byte(sums.String()), 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(sums.String()))
	sig, err := s.SignDigest(sum[:])
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, SigFile), []byte(sig), 0o644); err != nil {
		return err
	}
	st := &in_toto.ProvenanceStatementSLSA1{
		StatementHeader: in_toto.StatementHeader{Type: "https://in-toto.io/Statement/v1", PredicateType: slsa1.PredicateSLSAProvenance, Subject: subjects},
		Predicate: slsa1.ProvenancePredicate{
			BuildDefinition: slsa1.ProvenanceBuildDefinition{
				BuildType: BuildType, ExternalParameters: params,
				InternalParameters: map[string]string{"goVersion": runtime.Version(), "cgo": "0", "flags": "-trimpath -buildvcs=false -ldflags=-s -w -buildid="},
			},
			RunDetails: slsa1.ProvenanceRunDetails{Builder: slsa1.Builder{ID: "https://github.com/p7bundle/p7bundle/blob/main/Makefile#release"}},
		},
	}
	line, err := bundle.SignProvenance(ctx, s, st)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, ProvenanceFile), line, 0o644)
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := digest.SHA256.FromReader(f)
	return d.Encoded(), err
}
