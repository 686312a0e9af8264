package main

import (
	"github.com/urfave/cli/v2"

	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/manifests"
)

// kubeFlags are shared by the commands that talk to the cluster.
func kubeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: manifests.DefaultNamespace, Usage: "`NAMESPACE` of the release"},
		&cli.StringFlag{Name: "kubeconfig", EnvVars: []string{"KUBECONFIG"}, Usage: "kubeconfig `FILE`"},
		&cli.StringFlag{Name: "kube-context", Usage: "kubeconfig `CONTEXT`"},
	}
}

func doctorCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "doctor",
		Usage:     "check the site as the deployment guide asks: nodes, pulls from every node, PostgreSQL, SMTP, NFS, values",
		ArgsUsage: "BUNDLE",
		Flags: append(append(append(append(append(verifyFlags(), siteRegistryFlags()...), egressFlags()...), valuesFlags()...), kubeFlags()...),
			&cli.DurationFlag{Name: "timeout", Value: installer.DefaultDoctorTimeout, Usage: "how long each in-cluster probe may take"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		),
		Action: func(c *cli.Context) error {
			path, sig, site, err := bundleAndSite(c, env)
			if err != nil {
				return err
			}
			files, sets := valuesArgs(c)
			rep, err := (&installer.Doctor{
				Bundle: path, Signature: sig, Site: site,
				Files: files, Sets: sets,
				Namespace:  c.String("namespace"),
				Kubeconfig: c.String("kubeconfig"), KubeContext: c.String("kube-context"),
				Timeout: c.Duration("timeout"), Log: env.stderr,
			}).Run(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := printJSON(env.stdout, rep); err != nil {
					return err
				}
			} else {
				installer.PrintDoctor(env.stdout, rep)
			}
			return rep.Err()
		},
	}
}
