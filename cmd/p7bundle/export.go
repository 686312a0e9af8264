package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/p7bundle/p7bundle/installer"
)

func exportCommand(env *environment) *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write images of a verified bundle as an OCI image layout or a docker archive, for tools that read files (trivy --input, docker load, podman load)",
		ArgsUsage: "BUNDLE",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Required: true, Usage: "cosign public `KEY` (or KMS URI) the bundle's table of contents must be signed with"},
			&cli.StringFlag{Name: "oci-layout", Usage: "create an OCI image layout in `DIR` (never overwritten)"},
			&cli.BoolFlag{Name: "docker-archive", Usage: "write a docker load / podman load archive to -o"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "the docker archive `FILE` to create (never overwritten)"},
			&cli.StringSliceFlag{Name: "image", Usage: "export image `REF` only (as inspect lists it, with or without registry.pseven.io/; repeatable; default every image, OCI layout only)"},
			&cli.StringFlag{Name: "base", Usage: "for a differential BUNDLE: its base `BUNDLE`, verified with the same key, for the blobs it leaves out"},
			&cli.BoolFlag{Name: "json", Usage: "print what was written as JSON"},
		},
		Action: func(c *cli.Context) error {
			path, err := oneArg(c)
			if err != nil {
				return err
			}
			e := &installer.Export{Bundle: path, Base: c.String("base"), Signature: installer.Signature{Key: c.String("key")},
				OCILayout: c.String("oci-layout"), Images: c.StringSlice("image"), Log: env.stderr}
			switch {
			case c.Bool("docker-archive") && e.OCILayout != "":
				return usagef("--oci-layout and --docker-archive: give one")
			case c.Bool("docker-archive") && c.String("output") == "":
				return usagef("--docker-archive needs -o FILE")
			case c.Bool("docker-archive") && len(e.Images) == 0:
				return usagef("--docker-archive needs the images to hold: --image REF")
			case c.Bool("docker-archive"):
				e.DockerArchive = c.String("output")
			case e.OCILayout == "":
				return usagef("give --oci-layout DIR or --docker-archive -o FILE")
			case c.String("output") != "":
				return usagef("-o goes with --docker-archive; an OCI layout is --oci-layout DIR")
			}
			res, err := e.Run(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(env.stdout, res)
			}
			fmt.Fprintf(env.stdout, "wrote %s (%s): %d images\n", res.Path, res.Format, len(res.Images))
			return nil
		},
	}
}
