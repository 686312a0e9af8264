package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/p7bundle/p7bundle/builder"
	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/internal/humanize"
	"github.com/p7bundle/p7bundle/internal/imageref"
	"github.com/p7bundle/p7bundle/internal/inventory"
	"github.com/p7bundle/p7bundle/internal/version"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

const (
	envKeyPassword    = "COSIGN_PASSWORD"
	envSourcePassword = "P7BUNDLE_SOURCE_PASSWORD"
)

func buildCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "build",
		Usage:     "pull the chart's images and write one signed, reproducible bundle",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "chart", Required: true, Usage: "Helm chart `FILE` (.tgz) or directory"},
			&cli.StringFlag{Name: "key", Required: true, Usage: "cosign private `KEY` file (password from $" + envKeyPassword + " or prompt), or a KMS URI: " + kmsSchemes},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "bundle `FILE` (default <chart>-<version>.tar.zst)"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing bundle (and its sidecars) at the output path"},
			&cli.StringFlag{Name: "source-registry", Value: manifests.DefaultSourceRegistry, Usage: "registry `HOST` whose references are bundled"},
			&cli.StringSliceFlag{Name: "mirror", Usage: "pull `HOST=ENDPOINT[:PORT]`: images named HOST/... are fetched from ENDPOINT, references unchanged"},
			&cli.BoolFlag{Name: "plain-http", Usage: "talk HTTP, not HTTPS, to registries"},
			&cli.StringFlag{Name: "ca-file", Usage: "PEM `FILE` of extra CAs to trust"},
			&cli.BoolFlag{Name: "insecure", Usage: "skip TLS certificate verification"},
			&cli.StringFlag{Name: "username", Usage: "registry `USER` (default: docker config credentials)"},
			&cli.BoolFlag{Name: "password-stdin", Usage: "read the registry password from stdin (or set $" + envSourcePassword + ")"},
			&cli.StringSliceFlag{Name: "platform", Usage: "keep `OS/ARCH[/VARIANT]` from multi-platform images (default linux/amd64)"},
			&cli.IntFlag{Name: "jobs", Value: builder.DefaultJobs, Usage: "images pulled in parallel (their manifests and signatures 4× as many)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "keep fetched blobs in `DIR`, so a rerun fetches only what is missing"},
			&cli.StringSliceFlag{Name: "image", Usage: "also bundle `REF`"},
			&cli.StringSliceFlag{Name: "exclude", Usage: "leave out `REF`"},
			&cli.StringFlag{Name: "base", Usage: "write a differential bundle against `OLD` (a bundle, or a manifest from inspect --manifest): blobs it carried are left out"},
			&cli.StringFlag{Name: "verify-images-key", Usage: "refuse images without a cosign signature by this public `KEY` (file or KMS URI); signatures found are carried either way"},
			&cli.BoolFlag{Name: "json", Usage: "print what was written as JSON (docs/JSON.md)"},
			&cli.StringFlag{Name: "split-size", Usage: "write the bundle as parts of at most `SIZE` (4G for FAT32; at least 8Mi), plus BUNDLE.parts.json"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("build takes no arguments, got %q", c.Args().Slice())
			}
			if c.Int("jobs") < 1 {
				return usagef("--jobs must be at least 1")
			}
			split, err := splitSize(c.String("split-size"))
			if err != nil {
				return err
			}
			for _, p := range c.StringSlice("platform") {
				if _, err := mirror.ParsePlatform(p); err != nil {
					return usageError{err}
				}
			}
			mirrors, err := mirror.ParseMirrors(c.StringSlice("mirror"))
			if err != nil {
				return usageError{err}
			}
			sourcePassword, err := readPassword(c, env, "password-stdin", "username", envSourcePassword)
			if err != nil {
				return err
			}
			keyPassword, err := signingKeyPassword(env, c.String("key"))
			if err != nil {
				return err
			}
			created, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			// The encoder's buffers are most of the heap; a tighter GC target
			// keeps build's RSS near 200 MiB for a little CPU.
			debug.SetGCPercent(50)
			res, err := (&builder.Build{
				Chart:          c.String("chart"),
				Output:         c.String("output"),
				Force:          c.Bool("force"),
				KeyPath:        c.String("key"),
				KeyPassword:    keyPassword,
				SourceRegistry: c.String("source-registry"),
				Registry: mirror.RegistryOptions{
					Mirrors:   mirrors,
					PlainHTTP: c.Bool("plain-http"),
					CAFile:    c.String("ca-file"),
					Insecure:  c.Bool("insecure"),
					Username:  c.String("username"),
					Password:  sourcePassword,
				},
				Platforms:       c.StringSlice("platform"),
				Jobs:            c.Int("jobs"),
				CacheDir:        c.String("cache-dir"),
				Images:          c.StringSlice("image"),
				Exclude:         c.StringSlice("exclude"),
				Base:            c.String("base"),
				SplitSize:       split,
				VerifyImagesKey: c.String("verify-images-key"),
				ToolVersion:     version.Version,
				Created:         created,
				Log:             env.stderr,
				TTY:             isTerminal(env.stderr),
			}).Run(c.Context)
			if err != nil || !c.Bool("json") {
				return err
			}
			m := res.Manifest
			return printJSON(env.stdout, buildReport{
				Bundle: res.Path, Digest: res.Digest, Size: res.Size, Parts: res.Parts, PartsList: res.PartsPath,
				Signature: res.SigPath, SHA256: res.SHA256Path, Sigstore: res.SigstorePath, Provenance: res.ProvenancePath,
				Chart: chartReport{m.Chart.Name, m.Chart.Version, m.Chart.AppVersion}, Images: len(m.Images), Blobs: len(m.Blobs),
				Retries: res.Retries, Seconds: res.Elapsed.Seconds(),
			})
		},
	}
}

// buildReport is build --json.
type buildReport struct {
	Bundle     string      `json:"bundle"`
	Digest     string      `json:"digest"`
	Size       int64       `json:"size"`
	Parts      []string    `json:"parts,omitempty"`
	PartsList  string      `json:"partsList,omitempty"`
	Signature  string      `json:"signature,omitempty"`
	SHA256     string      `json:"sha256"`
	Sigstore   string      `json:"sigstore,omitempty"`
	Provenance string      `json:"provenance,omitempty"`
	Chart      chartReport `json:"chart"`
	Images     int         `json:"images"`
	Blobs      int         `json:"blobs"`
	Retries    int64       `json:"retries"`
	Seconds    float64     `json:"seconds"`
}

type chartReport struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

func verifyCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check a bundle's signature and every blob in it, offline",
		ArgsUsage: "BUNDLE",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Required: true, Usage: "cosign public `KEY` (cosign.pub), or a KMS URI: " + kmsSchemes},
			&cli.StringFlag{Name: "signature", Usage: "signature `FILE` (default BUNDLE.sig)"},
			&cli.StringFlag{Name: "provenance", Usage: "signed provenance `FILE` (default BUNDLE" + bundle.ProvenanceSuffix + ", checked when present)"},
			&cli.BoolFlag{Name: "approvals", Usage: "also list the approvals of the bundle (BUNDLE" + bundle.ApprovalSuffix + "), who approved it, for which sites, until when"},
			&cli.StringSliceFlag{Name: "approver-key", Usage: "check approvals against public `KEY` (repeatable; implies --approvals): each must have a valid approval, or verify fails"},
			&cli.StringFlag{Name: "site", Usage: "check approvals for site `NAME`"},
			&cli.StringFlag{Name: "approvals-file", Usage: "read approvals from `FILE` (implies --approvals)"},
			&cli.BoolFlag{Name: "json", Usage: "print a machine-readable report"},
		},
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			v, err := bundle.LoadVerifier(c.Context, c.String("key"))
			if err != nil {
				return err
			}
			approvers, err := loadApprovers(c)
			if err != nil {
				return err
			}
			approvals := ""
			if c.Bool("approvals") || c.IsSet("approver-key") || c.IsSet("approvals-file") {
				if approvals = c.String("approvals-file"); approvals == "" {
					approvals = bundle.ApprovalPath(bundle.Name(path))
				}
				if _, err := os.Stat(approvals); err != nil {
					return fmt.Errorf("%w: approvals %s: %w", errInput, approvals, err)
				}
			}
			rep, verr := bundle.Verify(c.Context, path, bundle.VerifyOptions{Verifier: v, SigPath: c.String("signature"), ProvenancePath: c.String("provenance")})
			if verr == nil && approvals != "" {
				verr = checkApprovals(c, path, approvals, rep, approvers)
			}
			if c.Bool("json") {
				if err := printJSON(env.stdout, rep); err != nil {
					return err
				}
			} else if verr == nil {
				m := rep.Manifest
				fmt.Fprintf(env.stdout, "Verified OK: %s\n  signature: valid (%s)\n  content:   %d blobs, %s checked\n  chart:     %s %s (appVersion %s)\n  images:    %d\n",
					path, rep.Digest, rep.BlobsChecked, humanize.Bytes(rep.BytesChecked),
					m.Chart.Name, m.Chart.Version, m.Chart.AppVersion, len(m.Images))
				if rep.ProvenanceVerified {
					fmt.Fprintf(env.stdout, "  provenance: valid (%s)\n", rep.Provenance)
				} else {
					fmt.Fprintf(env.stdout, "  provenance: none beside the bundle\n")
				}
				if a := rep.ExpectedAtSite; a != nil {
					fmt.Fprintf(env.stdout, "  differential: %d blobs (%s) are expected in the site registry from %s\n", len(a.Blobs), humanize.Bytes(a.Bytes), a.Base)
				}
				for _, n := range rep.Notes {
					fmt.Fprintf(env.stdout, "  note: %s\n", n)
				}
			}
			if !c.Bool("json") {
				printApprovals(env.stdout, rep.Approvals)
			}
			if verr != nil {
				return fmt.Errorf("verify: %w", verr)
			}
			return nil
		},
	}
}

func inspectCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what a bundle holds (reads its manifest; does not verify)",
		ArgsUsage: "BUNDLE",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the bundle manifest as JSON"},
			&cli.BoolFlag{Name: "manifest", Usage: "print the bundle manifest exactly as stored (for diff and differential builds without the old bundle)"},
			&cli.BoolFlag{Name: "cyclonedx", Usage: "print a CycloneDX 1.6 BOM: the bundle, its chart, every image with digest and purl"},
		},
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			if n := countSet(c, "json", "manifest", "cyclonedx"); n > 1 {
				return usagef("--json, --manifest and --cyclonedx each choose the output: give one")
			}
			m, err := bundle.ReadManifest(path)
			if err != nil {
				return err
			}
			if c.Bool("cyclonedx") {
				bom, err := inventory.CycloneDX(m, bundle.Name(path))
				if err != nil {
					return err
				}
				b, err := inventory.Encode(bom)
				if err != nil {
					return err
				}
				_, err = env.stdout.Write(b)
				return err
			}
			if c.Bool("manifest") {
				b, err := m.Encode()
				if err != nil {
					return err
				}
				_, err = env.raw.Write(b)
				return err
			}
			if c.Bool("json") {
				return printJSON(env.stdout, m)
			}
			w := env.stdout
			fmt.Fprintf(w, "Bundle:     %s (not verified; run p7bundle verify)\n", path)
			fmt.Fprintf(w, "Format:     %s v%d, built by %s %s\n", m.MediaType, m.FormatVersion, m.Tool.Name, m.Tool.Version)
			if m.Created != "" {
				fmt.Fprintf(w, "Created:    %s\n", m.Created)
			}
			fmt.Fprintf(w, "Chart:      %s %s (%s)\n", m.Chart.Name, m.Chart.Version, m.Chart.Digest)
			fmt.Fprintf(w, "AppVersion: %s\n", m.Chart.AppVersion)
			fmt.Fprintf(w, "Source:     %s\n", m.SourceRegistry)
			fmt.Fprintf(w, "Platforms:  %s\n", strings.Join(m.Platforms, ", "))
			fmt.Fprintf(w, "Secretgen:  %s\n", m.Secretgen)
			if m.Base != nil {
				n, size := m.OmittedBytes()
				fmt.Fprintf(w, "Base:       %s (manifest %s): differential, %d blobs (%s) expected at the site\n", m.Base.Name, m.Base.ManifestDigest, n, humanize.Bytes(size))
			}
			fmt.Fprintln(w)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tDIGEST\tPLATFORM\tSIZE")
			for _, img := range m.Images {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", img.Ref, img.Digest, strings.Join(img.Platforms, ","), humanize.Bytes(img.Size))
			}
			tw.Flush()
			fmt.Fprintf(w, "\nTotals:     %d images, %d unique blobs, %s (%s before sharing)\n",
				m.Totals.Images, m.Totals.Blobs, humanize.Bytes(m.Totals.BlobBytes), humanize.Bytes(m.Totals.ImageBytes))
			return nil
		},
	}
}

func keygenCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "keygen",
		Usage:     "write a cosign-compatible key pair: PREFIX.key (encrypted, 0600) and PREFIX.pub",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output-prefix", Value: bundle.DefaultKeyPrefix, Usage: "path `PREFIX` of the key files"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("keygen takes no arguments")
			}
			if err := bundle.CheckKeyPair(c.String("output-prefix")); err != nil {
				return err
			}
			pw, err := keyPassword(env, c.String("output-prefix")+".key", true)
			if err != nil {
				return err
			}
			key, pub, err := bundle.GenerateKeyPair(c.String("output-prefix"), pw)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.stdout, "Private key written to %s\nPublic key written to %s\n", key, pub)
			return nil
		},
	}
}

func publicKeyCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "public-key",
		Usage:     "print the PEM public key (cosign.pub) of a signing key, for verify and stock cosign",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Required: true, Usage: "cosign private `KEY` file (password from $" + envKeyPassword + " or prompt), or a KMS URI: " + kmsSchemes},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the key to `FILE` instead of stdout"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("public-key takes no arguments")
			}
			out := c.String("output")
			if out != "" && out != "-" {
				if err := atomicfile.Check(out, false); err != nil {
					return fmt.Errorf("%w (never overwritten): pass another -o", err)
				}
			}
			pw, err := signingKeyPassword(env, c.String("key"))
			if err != nil {
				return err
			}
			s, err := bundle.LoadSigner(c.Context, c.String("key"), pw)
			if err != nil {
				return err
			}
			pem, err := bundle.PublicKeyPEM(s)
			if err != nil {
				return err
			}
			if out != "" && out != "-" {
				return atomicfile.Create(out, pem, 0o644)
			}
			_, err = env.stdout.Write(pem)
			return err
		},
	}
}

func versionCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the p7bundle version",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print it as JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("version takes no arguments, got %q", c.Args().Slice())
			}
			v := versionReport{version.Version, version.Commit, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH, bundle.FormatVersion}
			if c.Bool("json") {
				return printJSON(env.stdout, v)
			}
			commit := ""
			if v.Commit != "" {
				commit = ", commit " + v.Commit
			}
			fmt.Fprintf(env.stdout, "p7bundle %s (bundle format v%d%s, %s %s)\n", v.Version, v.BundleFormat, commit, v.GoVersion, v.Platform)
			return nil
		},
	}
}

// countSet counts the boolean flags among names that are on.
func countSet(c *cli.Context, names ...string) int {
	n := 0
	for _, name := range names {
		if c.Bool(name) {
			n++
		}
	}
	return n
}

// oneArg is the BUNDLE argument: one file, or the parts of one split
// bundle in any order (B.tar.zst.0* as the shell expands it).
func oneArg(c *cli.Context) (string, error) {
	args := c.Args().Slice()
	if len(args) == 0 {
		return "", usagef("%s needs a BUNDLE argument", c.Command.Name)
	}
	for _, a := range args[1:] {
		if bundle.PartBase(a) == "" || bundle.PartBase(a) != bundle.PartBase(args[0]) {
			return "", usagef("%s takes one BUNDLE (or the parts of one split bundle), got %q", c.Command.Name, args)
		}
	}
	return args[0], nil
}

// splitSize parses --split-size: bytes, or a quantity such as 4G or 4Gi.
func splitSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, usagef("--split-size %q: %v", s, err)
	}
	n, ok := q.AsInt64()
	if !ok || n < bundle.MinSplitSize {
		return 0, usagef("--split-size %q: must be at least %d bytes (8Mi)", s, bundle.MinSplitSize)
	}
	return n, nil
}

func joinCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "join the parts of a split bundle into one file, checking each part",
		ArgsUsage: "BUNDLE.001|BUNDLE.parts.json",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "bundle `FILE` to write (default: the name the parts join into)"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing bundle at the output path"},
			&cli.BoolFlag{Name: "json", Usage: "print the joined file's path as JSON"},
		},
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			out, err := bundle.Join(path, c.String("output"), c.Bool("force"))
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%w: %v (--force replaces it)", errOutput, err)
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(env.stdout, joinReport{Bundle: out})
			}
			fmt.Fprintf(env.stdout, "joined into %s\n", out)
			return nil
		},
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

const kmsSchemes = "hashivault://NAME, awskms://..., gcpkms://..., azurekms://..."

// signingKeyPassword is the password of a key file; a KMS key has none.
func signingKeyPassword(env *environment, key string) ([]byte, error) {
	if bundle.IsKMSKey(key) {
		return nil, nil
	}
	return keyPassword(env, key, false)
}

// keyPassword reads the key password from $COSIGN_PASSWORD (set, even
// empty, wins, as in cosign) or else prompts on a terminal.
func keyPassword(env *environment, keyPath string, confirm bool) ([]byte, error) {
	if pw, ok := os.LookupEnv(envKeyPassword); ok {
		return []byte(pw), nil
	}
	f, ok := env.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, fmt.Errorf("%w: password for %s: set $%s (no terminal to prompt on)", bundle.ErrKey, keyPath, envKeyPassword)
	}
	fmt.Fprintf(env.stderr, "Password for %s: ", keyPath)
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(env.stderr)
	if err != nil {
		return nil, fmt.Errorf("%w: reading password: %v", bundle.ErrKey, err)
	}
	if confirm {
		fmt.Fprint(env.stderr, "Enter password again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.stderr)
		if err != nil {
			return nil, fmt.Errorf("%w: reading password: %v", bundle.ErrKey, err)
		}
		if string(again) != string(pw) {
			return nil, fmt.Errorf("%w: passwords do not match", bundle.ErrKey)
		}
	}
	return pw, nil
}

// readPassword takes a registry password from stdin (--STDINFLAG) or the
// environment, never from argv; either needs --USERFLAG.
func readPassword(c *cli.Context, env *environment, stdinFlag, userFlag, envVar string) (string, error) {
	if c.Bool(stdinFlag) {
		if c.String(userFlag) == "" {
			return "", usagef("--%s needs --%s", stdinFlag, userFlag)
		}
		line, err := bufio.NewReader(env.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading password from stdin: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", usagef("--%s: stdin held no password", stdinFlag)
		}
		return pw, nil
	}
	pw := os.Getenv(envVar)
	if pw != "" && c.String(userFlag) == "" {
		return "", usagef("$%s is set but --%s is not", envVar, userFlag)
	}
	return pw, nil
}

// sourceDateEpoch honours the reproducible-builds convention.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("%w: SOURCE_DATE_EPOCH=%q is not a Unix time", errInput, s)
	}
	return time.Unix(n, 0).UTC(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func diffCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "compare two bundles (or manifests from inspect --manifest): images added, removed, changed; bytes a differential bundle would carry",
		ArgsUsage: "OLD NEW",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the comparison as JSON (docs/JSON.md)"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usagef("diff needs OLD and NEW (bundles or exported manifests)")
			}
			old, err := bundle.LoadManifest(c.Args().Get(0))
			if err != nil {
				return err
			}
			new, err := bundle.LoadManifest(c.Args().Get(1))
			if err != nil {
				return err
			}
			d := bundle.DiffManifests(old, new)
			if c.Bool("json") {
				return printJSON(env.stdout, d)
			}
			printDiff(env.stdout, d)
			return nil
		},
	}
}

func printDiff(w io.Writer, d *bundle.Diff) {
	fmt.Fprintf(w, "Chart:      %s %s (%s) -> %s %s (%s)\n", d.Old.Name, d.Old.Version, d.Old.AppVersion, d.New.Name, d.New.Version, d.New.AppVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, group := range []struct {
		what   string
		images []bundle.ImageChange
	}{{"changed", d.Changed}, {"added", d.Added}, {"removed", d.Removed}} {
		for _, c := range group.images {
			fmt.Fprintf(tw, "%s\t%s\t%s -> %s\t%s -> %s\n", group.what, c.Repository, tagOf(c.FromRef), tagOf(c.ToRef), shortDigest(string(c.From)), shortDigest(string(c.To)))
		}
	}
	tw.Flush()
	retagged := 0
	for _, c := range d.Unchanged {
		if c.FromRef != c.ToRef {
			retagged++
		}
	}
	fmt.Fprintf(w, "Unchanged:  %d images (%d re-tagged, same digest)\n", len(d.Unchanged), retagged)
	fmt.Fprintf(w, "Blobs:      %d new (%s), %d shared (%s)\n", d.NewBlobs, humanize.Bytes(d.NewBytes), d.SharedBlobs, humanize.Bytes(d.SharedBytes))
	pct := 0.0
	if d.FullBytes > 0 {
		pct = 100 * float64(d.NewBytes) / float64(d.FullBytes)
	}
	fmt.Fprintf(w, "Carried:    full bundle %s, differential bundle %s (%.0f %%)\n", humanize.Bytes(d.FullBytes), humanize.Bytes(d.NewBytes), pct)
}

func tagOf(ref string) string {
	_, tag, dgst := imageref.Split(ref)
	switch {
	case tag != "":
		return tag
	case dgst != "":
		return "@" + shortDigest(dgst.String())
	}
	return "-"
}

func shortDigest(d string) string {
	if d == "" {
		return "-"
	}
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func approveCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "approve",
		Usage:     "verify a bundle, then sign an approval of it for the sites named (the change approval install can require)",
		ArgsUsage: "BUNDLE",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Required: true, Usage: "the approver's cosign private `KEY` file (password from $" + envKeyPassword + " or prompt), or a KMS URI: " + kmsSchemes},
			&cli.StringFlag{Name: "bundle-key", Required: true, Usage: "public `KEY` the bundle was signed with (cosign.pub), or a KMS URI: checked first"},
			&cli.StringSliceFlag{Name: "site", Usage: "approve for site `NAME` only (repeatable; default every site)"},
			&cli.StringFlag{Name: "expires", Value: "30d", Usage: "the approval lapses after `DURATION` (30d, 72h)"},
			&cli.StringFlag{Name: "not-before", Usage: "the approval holds from `TIME` (RFC 3339; default now)"},
			&cli.StringFlag{Name: "note", Usage: "`TEXT` to record: a change ticket, a review reference"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "approvals `FILE` to append to (default BUNDLE" + bundle.ApprovalSuffix + ")"},
		},
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			notBefore := time.Now()
			if s := c.String("not-before"); s != "" {
				if notBefore, err = time.Parse(time.RFC3339, s); err != nil {
					return usagef("--not-before %q: want RFC 3339, e.g. 2026-12-01T09:00:00Z", s)
				}
			}
			lasts, err := parseDays(c.String("expires"))
			if err != nil || lasts <= 0 {
				return usagef("--expires %q: want a positive duration such as 30d or 72h", c.String("expires"))
			}
			pw := func() ([]byte, error) { return signingKeyPassword(env, c.String("key")) }
			a, err := (&builder.Approve{Bundle: path, BundleKey: c.String("bundle-key"), Key: c.String("key"), KeyPassword: pw,
				Sites: c.StringSlice("site"), NotBefore: notBefore, Lasts: lasts, Note: c.String("note"), Output: c.String("output")}).Run(c.Context)
			if err != nil {
				return err
			}
			sites := "every site"
			if len(a.Sites) > 0 {
				sites = strings.Join(a.Sites, ", ")
			}
			fmt.Fprintf(env.stdout, "Approved %s (%s)\n  for:      %s\n  valid:    %s to %s\n  approver: %s\n  written:  %s (line %d)\n",
				path, a.Digest, sites, a.NotBefore.UTC().Format(time.RFC3339), a.NotAfter.UTC().Format(time.RFC3339), a.Approver, a.Output, a.Line)
			return nil
		},
	}
}

// parseDays is time.ParseDuration that also takes whole days ("30d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, err
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// loadApprovers loads verify's --approver-key keys, by the name given.
func loadApprovers(c *cli.Context) (map[string]bundle.Verifier, error) {
	keys := map[string]bundle.Verifier{}
	for _, ref := range c.StringSlice("approver-key") {
		v, err := bundle.LoadVerifier(c.Context, ref)
		if err != nil {
			return nil, err
		}
		keys[ref] = v
	}
	return keys, nil
}

// checkApprovals fills rep.Approvals; every approver key given must have
// a valid approval of this bundle (for --site when given).
func checkApprovals(c *cli.Context, path, file string, rep *bundle.Report, approvers map[string]bundle.Verifier) error {
	md, err := rep.Manifest.Digest()
	if err != nil {
		return err
	}
	site := c.String("site")
	statuses, err := bundle.CheckApprovals(c.Context, file, approvers, rep.Digest, md, site, time.Now())
	if err != nil {
		return err
	}
	rep.Approvals = statuses
	for _, ref := range c.StringSlice("approver-key") {
		if !slices.ContainsFunc(statuses, func(s bundle.ApprovalStatus) bool { return s.Valid && s.Key == ref }) {
			forSite := ""
			if site != "" {
				forSite = " for site " + site
			}
			return fmt.Errorf("%w: none valid by %s of %s (%s)%s in %s", bundle.ErrApproval, ref, path, rep.Digest, forSite, file)
		}
	}
	return nil
}

// printApprovals lists approvals as verify prints them.
func printApprovals(w io.Writer, statuses []bundle.ApprovalStatus) {
	for _, s := range statuses {
		verdict := "valid"
		if !s.Valid {
			verdict = "NOT VALID: " + s.Problem
		}
		fmt.Fprintf(w, "  approval %d: %s\n", s.Line, verdict)
		if a := s.Approval; a != nil {
			sites := "every site"
			if len(a.Sites) > 0 {
				sites = strings.Join(a.Sites, ", ")
			}
			by := a.Approver
			if s.Key != "" {
				by = s.Key + " (" + a.Approver + ")"
			}
			fmt.Fprintf(w, "    by %s, for %s, %s to %s", by, sites, a.NotBefore, a.NotAfter)
			if a.Note != "" {
				fmt.Fprintf(w, ", note %q", a.Note)
			}
			fmt.Fprintln(w)
		}
	}
}
