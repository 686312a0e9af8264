package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/manifests"
)

func supportCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:  "support",
		Usage: "collect what vendor support needs (Helm history, redacted values, pods, events, nodes, logs) into one archive",
		Flags: append(kubeFlags(),
			&cli.StringFlag{Name: "release", Value: manifests.DefaultReleaseName, Usage: "Helm release `NAME`"},
			&cli.StringFlag{Name: "bundle", Usage: "add the manifest of this `BUNDLE` (signature not checked)"},
			&cli.IntFlag{Name: "tail", Value: installer.DefaultSupportTail, Usage: "last `N` lines of each container log"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "archive `FILE` to write (mode 0600, never overwritten; default pseven-support-<namespace>-<UTC time>.tar.zst)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usagef("support takes no arguments, got %q", c.Args().Slice())
			}
			if c.Int("tail") <= 0 {
				return usagef("--tail %d: want a positive number of lines", c.Int("tail"))
			}
			rep, err := (&installer.Support{
				Namespace: c.String("namespace"), Release: c.String("release"), Bundle: c.String("bundle"),
				Tail: c.Int("tail"), Output: c.String("output"),
				Kubeconfig: c.String("kubeconfig"), KubeContext: c.String("kube-context"),
				Log: env.stderr,
			}).Run(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(env.stdout, rep)
			}
			fmt.Fprintf(env.stdout, "wrote %s (mode 0600): %d entries, secrets redacted; look it over before sending it to support\n", rep.Output, len(rep.Entries))
			return nil
		},
	}
}
