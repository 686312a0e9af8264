package main

import (
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/p7bundle/p7bundle/installer"
)

func serveCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "serve bundles read-only over the OCI registry API, straight from the files (for crane, skopeo, oras, scanners, proxy caches, containerd)",
		ArgsUsage: "BUNDLE...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Required: true, Usage: "cosign public `KEY` (or KMS URI) every bundle's table of contents must be signed with: checked before serving"},
			&cli.StringFlag{Name: "addr", Value: installer.DefaultServeAddr, Usage: "`HOST:PORT` to listen on (beyond loopback, use --tls-cert)"},
			&cli.StringFlag{Name: "prefix", Value: installer.DefaultPrefix, Usage: "repository `PATH` the images appear under, as push names them at a site (\"\" for the root)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "serve HTTPS with this certificate `FILE` (PEM, with its chain)"},
			&cli.StringFlag{Name: "tls-key", Usage: "the certificate's private key `FILE` (PEM)"},
			&cli.StringFlag{Name: "htpasswd", Usage: "require Basic auth from the users of this htpasswd `FILE` (bcrypt)"},
			&cli.BoolFlag{Name: "json", Usage: "write the access log as JSON lines"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usagef("serve needs at least one BUNDLE")
			}
			if (c.String("tls-cert") == "") != (c.String("tls-key") == "") {
				return usagef("--tls-cert and --tls-key go together")
			}
			// Each response holds a 4 MiB frame buffer for seconds: a lower GC
			// target keeps a busy server's RSS flat (137 -> 120 MiB at 8 clients).
			if os.Getenv("GOGC") == "" {
				defer debug.SetGCPercent(debug.SetGCPercent(50))
			}
			prefix := c.String("prefix")
			if c.IsSet("prefix") && prefix == "" {
				prefix = "/"
			}
			return (&installer.Serve{
				Bundles: c.Args().Slice(), Signature: installer.Signature{Key: c.String("key")},
				Addr: c.String("addr"), Prefix: prefix, TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"),
				Htpasswd: c.String("htpasswd"), AccessJSON: c.Bool("json"), Log: env.stderr, AccessLog: env.stdout,
			}).Run(c.Context)
		},
	}
}
