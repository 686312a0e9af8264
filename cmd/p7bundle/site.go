package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/internal/humanize"
	"github.com/p7bundle/p7bundle/internal/policy"
	"github.com/p7bundle/p7bundle/manifests"
)

const envRegistryPassword = "P7BUNDLE_REGISTRY_PASSWORD"

// siteRegistryFlags are shared by push, install, values and lint.
func siteRegistryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "registry", Required: true, Usage: "site registry `HOST[:PORT]`"},
		&cli.StringFlag{Name: "registry-prefix", Value: installer.DefaultPrefix, Usage: "repository `PATH` under the site registry (\"\" mirrors at the root)"},
		&cli.StringFlag{Name: "registry-username", Usage: "site registry `USER` (default: docker config credentials)"},
		&cli.BoolFlag{Name: "registry-password-stdin", Usage: "read the site registry password from stdin (or set $" + envRegistryPassword + ")"},
		&cli.StringFlag{Name: "ca-file", Usage: "PEM `FILE` of the site registry's CA"},
		&cli.BoolFlag{Name: "insecure", Usage: "skip TLS certificate verification of the site registry"},
		&cli.BoolFlag{Name: "plain-http", Usage: "talk HTTP, not HTTPS, to the site registry"},
	}
}

// hasFlag says whether c's command defines the flag name.
func hasFlag(c *cli.Context, name string) bool {
	for _, f := range c.Command.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// egressFlags are shared by the commands that dial the site registry.
func egressFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "allow-endpoint", Usage: "also allow dialing `HOST:PORT` (repeatable): a token service or blob storage the site registry names, under --strict-egress"},
		&cli.BoolFlag{Name: "strict-egress", Usage: "refuse the token service and blob storage the site registry names unless --allow-endpoint lists them"},
	}
}

// siteRegistry binds the site registry flag group (and egressFlags where
// the command has them).
func siteRegistry(c *cli.Context, env *environment) (installer.SiteRegistry, error) {
	s := installer.SiteRegistry{
		Host: c.String("registry"), Prefix: c.String("registry-prefix"), Username: c.String("registry-username"),
		CAFile: c.String("ca-file"), Insecure: c.Bool("insecure"), PlainHTTP: c.Bool("plain-http"),
	}
	if hasFlag(c, "strict-egress") {
		s.AllowEndpoints, s.StrictEgress = c.StringSlice("allow-endpoint"), c.Bool("strict-egress")
	}
	if c.IsSet("registry-prefix") && s.Prefix == "" {
		s.Prefix = "/" // "" on the command line mirrors at the root
	}
	var err error
	s.Password, err = readPassword(c, env, "registry-password-stdin", "registry-username", envRegistryPassword)
	return s, err
}

// signature binds the verify flag group: a key and skipping its check
// contradict each other.
func signature(c *cli.Context) (installer.Signature, error) {
	s := installer.Signature{Key: c.String("key"), InsecureSkipVerify: c.Bool("insecure-skip-verify"),
		RequireApprovals: c.StringSlice("require-approval"), Site: c.String("site"), Approvals: c.String("approvals")}
	if s.Key != "" && s.InsecureSkipVerify {
		return s, usagef("--key and --insecure-skip-verify contradict each other: give one")
	}
	if len(s.RequireApprovals) > 0 && s.InsecureSkipVerify {
		return s, usagef("--require-approval and --insecure-skip-verify contradict each other: approvals bind the signed table of contents")
	}
	// The site policy, when there is one, adds to the flags and forbids.
	if path := c.String("policy"); c.IsSet("policy") || fileExists(path) {
		p, err := policy.Load(path)
		if err != nil {
			return s, err
		}
		f, err := p.Apply(policy.Flags{Key: s.Key, RequireApprovals: s.RequireApprovals, Site: s.Site, Registry: c.String("registry"),
			InsecureSkipVerify: s.InsecureSkipVerify, SkipDoctor: hasFlag(c, "skip-doctor") && c.Bool("skip-doctor")})
		if err != nil {
			return s, err
		}
		s.Key, s.RequireApprovals, s.Site = f.Key, f.RequireApprovals, f.Site
	}
	if s.Approvals != "" {
		if _, err := os.Stat(s.Approvals); err != nil {
			return s, fmt.Errorf("%w: approvals %s: %w", errInput, s.Approvals, err)
		}
	}
	return s, nil
}

// bundleAndSite binds what push, install and doctor share: the BUNDLE
// argument, the signature flags and the site registry.
func bundleAndSite(c *cli.Context, env *environment) (string, installer.Signature, installer.SiteRegistry, error) {
	path, err := oneArg(c)
	if err != nil {
		return "", installer.Signature{}, installer.SiteRegistry{}, err
	}
	sig, err := signature(c)
	if err != nil {
		return "", sig, installer.SiteRegistry{}, err
	}
	site, err := siteRegistry(c, env)
	return path, sig, site, err
}

// jobsFlag binds --jobs, at least 1.
func jobsFlag(c *cli.Context) (int, error) {
	if n := c.Int("jobs"); n >= 1 {
		return n, nil
	}
	return 0, usagef("--jobs must be at least 1, got %d", c.Int("jobs"))
}

// checkedIfKeyed binds values' and lint's signature flags: checked when
// --key is given, never skipped on purpose (they push nothing).
func checkedIfKeyed(c *cli.Context) installer.Signature {
	return installer.Signature{Key: c.String("key")}
}

func verifyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "key", Usage: "cosign public `KEY` (or KMS URI) the bundle's table of contents must be signed with"},
		&cli.BoolFlag{Name: "insecure-skip-verify", Usage: "DANGEROUS: push without checking the signature"},
		&cli.StringSliceFlag{Name: "require-approval", Usage: "refuse the bundle unless approver `KEY` (public key file or KMS URI) approved it with p7bundle approve (repeatable: each must)"},
		&cli.StringFlag{Name: "site", Usage: "this site's `NAME`, for approvals that name sites"},
		&cli.StringFlag{Name: "approvals", Usage: "approvals `FILE` (default BUNDLE" + bundle.ApprovalSuffix + ")"},
		&cli.StringFlag{Name: "policy", Value: defaultPolicy, Usage: "site policy `FILE`, applied when present: the keys that must sign and approve, the site, the registries allowed, whether --insecure-skip-verify and --skip-doctor may be used"},
	}
}

// defaultPolicy is the site policy applied whenever it exists.
const defaultPolicy = "/etc/p7bundle/policy.yaml"

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func pushCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "push",
		Usage:     "verify a bundle and push its images into the site registry (no cluster needed)",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append(verifyFlags(), siteRegistryFlags()...), egressFlags()...),
			&cli.IntFlag{Name: "jobs", Value: installer.DefaultJobs, Usage: "concurrent uploads (registries answer each request slowly; more in flight hides that)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			baseFlag(),
		),
		Action: func(c *cli.Context) error {
			path, sig, site, err := bundleAndSite(c, env)
			if err != nil {
				return err
			}
			jobs, err := jobsFlag(c)
			if err != nil {
				return err
			}
			res, err := (&installer.Push{
				Bundle: path, Signature: sig, Site: site, Base: c.String("base"),
				Jobs: jobs, Log: env.stderr,
			}).Run(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(env.stdout, res)
			}
			fmt.Fprintf(env.stdout, "pushed %d images to %s: %d blobs uploaded (%s), %d already present, %d mounted\n",
				len(res.Images), site.Host, res.BlobsPushed, humanize.Bytes(res.BytesPushed), res.BlobsSkipped, res.BlobsMounted)
			return nil
		},
	}
}

// valuesFlags are Helm's, read as Helm reads them: -f splits on commas
// as CSV (pflag's StringSlice), the --set family keeps every value whole
// (pflag's StringArray) for Helm's own parser.
func valuesFlags() []cli.Flag {
	// Two flags sharing one list, not an alias: urfave refuses -f and
	// --values in one command line, helm takes both.
	files := &csvList{}
	return []cli.Flag{
		&cli.GenericFlag{Name: "values", Value: files, Usage: "admin values `FILE`s, also -f (repeatable, or comma-separated as in helm; the first one's comments and order are kept)"},
		&cli.GenericFlag{Name: "f", Value: files, Hidden: true},
		&cli.GenericFlag{Name: "set", Value: &wholeList{}, Usage: "set `KEY=VALUE` (helm syntax, repeatable)"},
		&cli.GenericFlag{Name: "set-string", Value: &wholeList{}, Usage: "set `KEY=VALUE`, VALUE always a string (helm syntax, repeatable)"},
		&cli.GenericFlag{Name: "set-file", Value: &wholeList{}, Usage: "set `KEY=PATH` to the content of the file PATH (helm syntax, repeatable)"},
		&cli.GenericFlag{Name: "set-json", Value: &wholeList{}, Usage: "set `KEY=JSON` (helm syntax, repeatable)"},
		&cli.GenericFlag{Name: "set-literal", Value: &wholeList{}, Usage: "set `KEY=VALUE`, VALUE taken literally (helm syntax, repeatable)"},
	}
}

// valuesArgs binds valuesFlags: the -f files and the sets.
func valuesArgs(c *cli.Context) ([]string, manifests.Sets) {
	list := func(name string) []string {
		if v, ok := c.Generic(name).(interface{ list() []string }); ok {
			return v.list()
		}
		return nil
	}
	return list("values"), manifests.Sets{
		Values: list("set"), StringValues: list("set-string"), FileValues: list("set-file"),
		JSONValues: list("set-json"), LiteralValues: list("set-literal"),
	}
}

// wholeList collects a repeatable flag's values as given.
type wholeList []string

func (l *wholeList) Set(s string) error { *l = append(*l, s); return nil }
func (l *wholeList) String() string     { return "" }
func (l *wholeList) list() []string     { return *l }

// csvList collects a repeatable flag's values, each read as one CSV
// record: "a.yaml,b.yaml" is two, "\"my,values.yaml\"" one.
type csvList []string

func (l *csvList) Set(s string) error {
	if s == "" {
		return nil
	}
	rec, err := csv.NewReader(strings.NewReader(s)).Read()
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	*l = append(*l, rec...)
	return nil
}
func (l *csvList) String() string { return "" }
func (l *csvList) list() []string { return *l }

func valuesCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "values",
		Usage:     "write the site values: every image reference moved to the site registry, registry.* set",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append([]cli.Flag{}, verifyFlags()[:1]...), siteRegistryFlags()...), append(valuesFlags(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: installer.DefaultValuesFile, Usage: "values `FILE` to write (mode 0600)"},
			&cli.BoolFlag{Name: "json", Usage: "print what was written and moved as JSON (never the values)"})...),
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			site, err := siteRegistry(c, env)
			if err != nil {
				return err
			}
			files, sets := valuesArgs(c)
			res, err := (&installer.Values{
				Bundle: path, Signature: checkedIfKeyed(c), Site: site,
				Files: files, Sets: sets, Output: c.String("output"), Log: env.stderr,
			}).Run(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				v := res.Values
				return printJSON(env.stdout, valuesReport{
					Output: res.Output, SitePath: res.SitePath, Rewritten: v.Rewritten, Repointed: v.Repointed, TagForms: v.TagForms,
				})
			}
			for _, f := range res.Values.TagForms {
				fmt.Fprintf(env.stderr, "%s\n", f)
			}
			for _, r := range res.Values.Repointed {
				fmt.Fprintf(env.stderr, "%s moved to this bundle: %s -> %s\n", r.Path, r.From, r.To)
			}
			fmt.Fprintf(env.stdout, "wrote %s (mode 0600): %d image references moved to %s\n", res.Output, len(res.Values.Rewritten), res.SitePath)
			return nil
		},
	}
}

func lintCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "lint",
		Usage:     "render the chart with the site values and fail on any image from outside the site registry",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append(append([]cli.Flag{}, verifyFlags()[:1]...), siteRegistryFlags()...), egressFlags()...), append(valuesFlags(),
			&cli.StringFlag{Name: "release", Value: manifests.DefaultReleaseName, Usage: "release `NAME` to render with"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: manifests.DefaultNamespace, Usage: "`NAMESPACE` to render with"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"})...),
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			site, err := siteRegistry(c, env)
			if err != nil {
				return err
			}
			files, sets := valuesArgs(c)
			res, err := (&installer.Lint{
				Bundle: path, Signature: checkedIfKeyed(c), Site: site,
				Files: files, Sets: sets,
				Release: c.String("release"), Namespace: c.String("namespace"), Log: env.stderr,
			}).Run(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := printJSON(env.stdout, res); err != nil {
					return err
				}
			} else {
				for _, img := range res.Images {
					fmt.Fprintf(env.stdout, "image %s\n", img.Ref)
				}
				for _, o := range res.Offenders {
					fmt.Fprintf(env.stdout, "OFFENDER %s\n", o)
				}
				if len(res.Offenders) == 0 {
					fmt.Fprintf(env.stdout, "air-gap lint passed: %d images, all in %s\n", len(res.Images), res.SitePath)
				}
			}
			return res.Err()
		},
	}
}

func installCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "install",
		Usage:     "verify, push, configure and install (or upgrade) pSeven Enterprise at the site",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append(append(verifyFlags(), siteRegistryFlags()...), egressFlags()...), valuesFlags()...),
			&cli.StringFlag{Name: "secrets", Usage: "secrets `FILE` (pseven-secrets.yaml) to use as given"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: manifests.DefaultNamespace, Usage: "`NAMESPACE` to install into"},
			&cli.StringFlag{Name: "release", Value: manifests.DefaultReleaseName, Usage: "Helm release `NAME`"},
			&cli.BoolFlag{Name: "create-namespace", Usage: "create the namespace if it does not exist"},
			&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "kubeconfig `FILE`"},
			&cli.StringFlag{Name: "kube-context", Usage: "kubeconfig `CONTEXT`"},
			&cli.DurationFlag{Name: "timeout", Value: installer.DefaultTimeout, Usage: "Helm operation timeout"},
			&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait until every resource and Job is ready (the default, as in the guide)"},
			&cli.BoolFlag{Name: "no-wait", Usage: "do not wait for resources and Jobs to be ready"},
			&cli.BoolFlag{Name: "recover", Usage: "roll a release stuck in pending-* (an interrupted run) back to its last deployed revision, then go on"},
			&cli.BoolFlag{Name: "allow-downgrade", Usage: "install a chart older than the one the release runs"},
			&cli.BoolFlag{Name: "no-backup", Usage: "DANGEROUS: upgrade without first backing up the running release's values, secrets and manifest"},
			&cli.StringFlag{Name: "backup-dir", Usage: "`DIR` for the pre-upgrade backup (default: the working directory)"},
			&cli.BoolFlag{Name: "reset-values", Usage: "upgrade from the chart's defaults plus -f/--set, not from the running release's values"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check and render only: push nothing, install nothing"},
			&cli.BoolFlag{Name: "skip-doctor", Usage: "do not run the site checks of p7bundle doctor before pushing"},
			&cli.DurationFlag{Name: "doctor-timeout", Value: installer.DefaultDoctorTimeout, Usage: "how long each in-cluster doctor probe may take"},
			&cli.StringFlag{Name: "log-file", Usage: "debug log `FILE` (default pseven-<chart version>.log)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: installer.DefaultValuesFile, Usage: "values `FILE` to write (mode 0600)"},
			&cli.IntFlag{Name: "jobs", Value: installer.DefaultJobs, Usage: "concurrent uploads (registries answer each request slowly; more in flight hides that)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			baseFlag(),
		),
		Action: func(c *cli.Context) error {
			path, sig, site, err := bundleAndSite(c, env)
			if err != nil {
				return err
			}
			jobs, err := jobsFlag(c)
			if err != nil {
				return err
			}
			files, sets := valuesArgs(c)
			rep, err := (&installer.Install{
				Bundle: path, Signature: sig, Base: c.String("base"), Site: site, Jobs: jobs,
				Files: files, Sets: sets,
				SecretsFile: c.String("secrets"), ValuesOut: c.String("output"), LogFile: c.String("log-file"),
				Namespace: c.String("namespace"), Release: c.String("release"), CreateNamespace: c.Bool("create-namespace"),
				Kubeconfig: c.String("kubeconfig"), KubeContext: c.String("kube-context"),
				Timeout: c.Duration("timeout"), NoWait: c.Bool("no-wait") || !c.Bool("wait"), DryRun: c.Bool("dry-run"),
				Recover: c.Bool("recover"), AllowDowngrade: c.Bool("allow-downgrade"), ResetValues: c.Bool("reset-values"),
				NoBackup: c.Bool("no-backup"), BackupDir: c.String("backup-dir"),
				SkipDoctor: c.Bool("skip-doctor"), DoctorTimeout: c.Duration("doctor-timeout"),
				Out: env.stdout, Log: env.stderr,
			}).Run(c.Context)
			if rep != nil && c.Bool("json") {
				if jerr := printJSON(env.stdout, rep); jerr != nil && err == nil {
					err = jerr
				}
			} else if err == nil {
				installer.PrintReport(env.stdout, rep)
			}
			return err
		},
	}
}

func restoreValuesCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "restore-values",
		Usage:     "write the release values saved in a pre-upgrade backup (pseven-backup-*.tar.zst)",
		ArgsUsage: "BACKUP",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: installer.DefaultRestoredValuesFile, Usage: "values `FILE` to write (mode 0600, never overwritten)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("restore-values needs exactly one BACKUP argument")
			}
			if err := installer.RestoreValues(c.Args().First(), c.String("output")); err != nil {
				if errors.Is(err, installer.ErrOutput) {
					return err
				}
				if errors.Is(err, os.ErrExist) || errors.Is(err, os.ErrPermission) {
					return fmt.Errorf("%w: %v", errOutput, err)
				}
				return fmt.Errorf("%w: %v", errInput, err)
			}
			fmt.Fprintf(env.stdout, "wrote %s (mode 0600): the values of the backed-up revision; install them with -f %s\n", c.String("output"), c.String("output"))
			return nil
		},
	}
}

func baseFlag() cli.Flag {
	return &cli.StringFlag{Name: "base", Usage: "for a differential BUNDLE whose base is not in the site registry: the base `BUNDLE`, verified with the same key and pushed first"}
}
