package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/internal/build"
	"github.com/p7bundle/p7bundle/mirror"
)

const envRegistryPassword = "P7BUNDLE_REGISTRY_PASSWORD"

// siteRegistryFlags are shared by push, install, values and lint.
func siteRegistryFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "registry", Required: true, Usage: "site registry `HOST[:PORT]`"},
		&cli.StringFlag{Name: "registry-prefix", Value: "pseven", Usage: "repository `PATH` under the site registry (\"\" mirrors at the root)"},
		&cli.StringFlag{Name: "registry-username", Usage: "site registry `USER` (default: docker config credentials)"},
		&cli.BoolFlag{Name: "registry-password-stdin", Usage: "read the site registry password from stdin (or set $" + envRegistryPassword + ")"},
		&cli.StringFlag{Name: "ca-file", Usage: "PEM `FILE` of the site registry's CA"},
		&cli.BoolFlag{Name: "insecure", Usage: "skip TLS certificate verification of the site registry"},
		&cli.BoolFlag{Name: "plain-http", Usage: "talk HTTP, not HTTPS, to the site registry"},
	}
}

// siteRegistry is the parsed site registry flag group.
type siteRegistry struct {
	host, prefix, username, password string
	options                          mirror.RegistryOptions
}

func parseSiteRegistry(c *cli.Context, env *environment, extraAllowed ...string) (*siteRegistry, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(c.String("registry"), "https://"), "http://"), "/")
	if host == "" || strings.Contains(host, "/") {
		return nil, usagef("--registry %q: want HOST[:PORT]", c.String("registry"))
	}
	s := &siteRegistry{host: host, prefix: strings.Trim(c.String("registry-prefix"), "/"), username: c.String("registry-username")}
	if c.Bool("registry-password-stdin") {
		if s.username == "" {
			return nil, usagef("--registry-password-stdin needs --registry-username")
		}
		line, err := bufio.NewReader(env.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading password from stdin: %w", err)
		}
		if s.password = strings.TrimRight(line, "\r\n"); s.password == "" {
			return nil, usagef("--registry-password-stdin: stdin held no password")
		}
	} else if pw := os.Getenv(envRegistryPassword); pw != "" {
		if s.username == "" {
			return nil, usagef("$%s is set but --registry-username is not", envRegistryPassword)
		}
		s.password = pw
	}
	s.options = mirror.RegistryOptions{
		PlainHTTP:   c.Bool("plain-http"),
		CAFile:      c.String("ca-file"),
		Insecure:    c.Bool("insecure"),
		Username:    s.username,
		Password:    s.password,
		DialContext: installer.SiteGuard(host, c.Bool("plain-http"), extraAllowed...).DialContext,
	}
	return s, nil
}

func verifyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "key", Usage: "cosign public `KEY` the bundle must be signed with"},
		&cli.StringFlag{Name: "signature", Usage: "signature `FILE` (default BUNDLE.sig)"},
		&cli.BoolFlag{Name: "insecure-skip-verify", Usage: "DANGEROUS: push without checking the signature"},
	}
}

func pushCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "push",
		Usage:     "verify a bundle and push its images into the site registry (no cluster needed)",
		ArgsUsage: "BUNDLE",
		Flags: append(append(verifyFlags(), siteRegistryFlags()...),
			&cli.IntFlag{Name: "jobs", Value: 8, Usage: "concurrent uploads (registries answer each request slowly; more in flight hides that)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			baseFlag(),
		),
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			if c.String("key") == "" && !c.Bool("insecure-skip-verify") {
				return fmt.Errorf("%w: --key is required: a bundle is verified before anything is pushed", bundle.ErrKey)
			}
			site, err := parseSiteRegistry(c, env)
			if err != nil {
				return err
			}
			client, err := mirror.NewClient(site.options)
			if err != nil {
				return err
			}
			res, err := installer.Push(c.Context, installer.PushOptions{
				Bundle: path, KeyPath: c.String("key"), SigPath: c.String("signature"),
				InsecureSkipVerify: c.Bool("insecure-skip-verify"),
				Registry:           site.host, Prefix: site.prefix, Jobs: c.Int("jobs"),
				Client: client, Log: env.stderr, Base: c.String("base"),
			})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(env.stdout, res)
			}
			fmt.Fprintf(env.stdout, "pushed %d images to %s: %d blobs uploaded (%s), %d already present, %d mounted\n",
				len(res.Images), site.host, res.BlobsPushed, build.HumanBytes(res.BytesPushed), res.BlobsSkipped, res.BlobsMounted)
			return nil
		},
	}
}

func valuesFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "values", Aliases: []string{"f"}, Usage: "admin values `FILE` (repeatable; the first one's comments and order are kept)"},
		&cli.StringSliceFlag{Name: "set", Usage: "set `KEY=VALUE` (helm syntax, repeatable)"},
	}
}

func valuesCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "values",
		Usage:     "write the site values: every image reference moved to the site registry, registry.* set",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append([]cli.Flag{}, verifyFlags()[:2]...), siteRegistryFlags()...), append(valuesFlags(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "values.airgap.yaml", Usage: "values `FILE` to write (mode 0600)"})...),
		Action: func(c *cli.Context) error {
			p, site, err := prepareValues(c, env)
			if err != nil {
				return err
			}
			if err := installer.WriteSecretFile(c.String("output"), p.Values.Document); err != nil {
				return fmt.Errorf("%w: %v", errOutput, err)
			}
			for _, f := range p.Values.TagForms {
				fmt.Fprintf(env.stderr, "%s\n", f)
			}
			for _, r := range p.Values.Repointed {
				fmt.Fprintf(env.stderr, "%s moved to this bundle: %s -> %s\n", r.Path, r.From, r.To)
			}
			fmt.Fprintf(env.stdout, "wrote %s (mode 0600): %d image references moved to %s\n", c.String("output"), len(p.Values.Rewritten), manifestsSitePath(site))
			return nil
		},
	}
}

// prepareValues is the shared start of values and lint: the bundle's chart
// with the admin's values moved to the site registry.
func prepareValues(c *cli.Context, env *environment) (*installer.Prepared, *siteRegistry, error) {
	path, err := oneArg(c)
	if err != nil {
		return nil, nil, err
	}
	site, err := parseSiteRegistry(c, env)
	if err != nil {
		return nil, nil, err
	}
	if c.String("key") == "" {
		fmt.Fprintf(env.stderr, "note: no --key: the chart in %s is used without checking its signature\n", path)
	}
	p, err := installer.Prepare(installer.ValuesOptions{
		Bundle: path, KeyPath: c.String("key"), SigPath: c.String("signature"),
		SiteRegistry: site.host, Prefix: site.prefix, Username: site.username, Password: site.password,
		Files: c.StringSlice("values"), Sets: c.StringSlice("set"),
	})
	return p, site, err
}

func lintCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "lint",
		Usage:     "render the chart with the site values and fail on any image from outside the site registry",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append([]cli.Flag{}, verifyFlags()[:2]...), siteRegistryFlags()...), append(valuesFlags(),
			&cli.StringFlag{Name: "release", Value: "pseven-rl", Usage: "release `NAME` to render with"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "pseven-ns", Usage: "`NAMESPACE` to render with"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"})...),
		Action: func(c *cli.Context) error {
			p, site, err := prepareValues(c, env)
			if err != nil {
				return err
			}
			client, err := mirror.NewClient(site.options)
			if err != nil {
				return err
			}
			res, err := installer.Lint(c.Context, p, client, site.host, site.prefix, c.String("release"), c.String("namespace"))
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
					fmt.Fprintf(env.stdout, "air-gap lint passed: %d images, all in %s\n", len(res.Images), manifestsSitePath(site))
				}
			}
			return res.Err()
		},
	}
}

func manifestsSitePath(s *siteRegistry) string {
	if s.prefix == "" {
		return s.host
	}
	return s.host + "/" + s.prefix
}

func installCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "install",
		Usage:     "verify, push, configure and install (or upgrade) pSeven Enterprise at the site",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append(verifyFlags(), siteRegistryFlags()...), valuesFlags()...),
			&cli.StringFlag{Name: "secrets", Usage: "secrets `FILE` (pseven-secrets.yaml) to use as given"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: "pseven-ns", Usage: "`NAMESPACE` to install into"},
			&cli.StringFlag{Name: "release", Value: "pseven-rl", Usage: "Helm release `NAME`"},
			&cli.BoolFlag{Name: "create-namespace", Usage: "create the namespace if it does not exist"},
			&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "kubeconfig `FILE`"},
			&cli.StringFlag{Name: "kube-context", Usage: "kubeconfig `CONTEXT`"},
			&cli.DurationFlag{Name: "timeout", Value: 60 * time.Minute, Usage: "Helm operation timeout"},
			&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait until every resource and Job is ready (the default, as in the guide)"},
			&cli.BoolFlag{Name: "no-wait", Usage: "do not wait for resources and Jobs to be ready"},
			&cli.BoolFlag{Name: "recover", Usage: "roll a release stuck in pending-* (an interrupted run) back to its last deployed revision, then go on"},
			&cli.BoolFlag{Name: "allow-downgrade", Usage: "install a chart older than the one the release runs"},
			&cli.BoolFlag{Name: "no-backup", Usage: "DANGEROUS: upgrade without first backing up the running release's values, secrets and manifest"},
			&cli.StringFlag{Name: "backup-dir", Usage: "`DIR` for the pre-upgrade backup (default: the working directory)"},
			&cli.BoolFlag{Name: "reset-values", Usage: "upgrade from the chart's defaults plus -f/--set, not from the running release's values"},
			&cli.BoolFlag{Name: "dry-run", Usage: "check and render only: push nothing, install nothing"},
			&cli.StringFlag{Name: "log-file", Usage: "debug log `FILE` (default pseven-<chart version>.log)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "values.airgap.yaml", Usage: "values `FILE` to write (mode 0600)"},
			&cli.IntFlag{Name: "jobs", Value: 8, Usage: "concurrent uploads (registries answer each request slowly; more in flight hides that)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			baseFlag(),
		),
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			if c.String("key") == "" && !c.Bool("insecure-skip-verify") {
				return fmt.Errorf("%w: --key is required: a bundle is verified before anything is installed", bundle.ErrKey)
			}
			site, err := parseSiteRegistry(c, env)
			if err != nil {
				return err
			}
			rep, err := installer.Install(c.Context, installer.InstallOptions{
				Bundle: path, KeyPath: c.String("key"), SigPath: c.String("signature"),
				InsecureSkipVerify: c.Bool("insecure-skip-verify"), Base: c.String("base"),
				SiteRegistry: site.host, Prefix: site.prefix, Username: site.username, Password: site.password,
				Registry: site.options, Jobs: c.Int("jobs"),
				Files: c.StringSlice("values"), Sets: c.StringSlice("set"),
				SecretsFile: c.String("secrets"), ValuesOut: c.String("output"), LogFile: c.String("log-file"),
				Namespace: c.String("namespace"), Release: c.String("release"), CreateNamespace: c.Bool("create-namespace"),
				Kubeconfig: c.String("kubeconfig"), KubeContext: c.String("kube-context"),
				Timeout: c.Duration("timeout"), NoWait: c.Bool("no-wait") || !c.Bool("wait"), DryRun: c.Bool("dry-run"),
				Recover: c.Bool("recover"), AllowDowngrade: c.Bool("allow-downgrade"), ResetValues: c.Bool("reset-values"),
				NoBackup: c.Bool("no-backup"), BackupDir: c.String("backup-dir"),
				Out: env.stdout, Log: env.stderr,
			})
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
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "values.restored.yaml", Usage: "values `FILE` to write (mode 0600, never overwritten)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("restore-values needs exactly one BACKUP argument")
			}
			if err := installer.RestoreValues(c.Args().First(), c.String("output")); err != nil {
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
