// Command demo runs p7bundle's main job on the built-in fixtures: an
// upstream registry standing in for registry.pseven.io, a key pair, a
// build through --mirror, verify and inspect, then an install into an
// air-gapped test site (registry + Kubernetes, no route out) and teardown.
// `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/p7bundle/p7bundle/internal/testing/testenv"
	"github.com/p7bundle/p7bundle/internal/testing/testsite"
)

func main() {
	bin := flag.String("bin", "bin/p7bundle", "p7bundle binary to demonstrate")
	out := flag.String("out", "demo-out", "directory for the key pair and the bundle")
	noSite := flag.Bool("no-site", false, "stop after build/verify/inspect (no Kubernetes site)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *bin, *out, *noSite); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, out string, skipSite bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	out, _ = filepath.Abs(out)
	step("starting an upstream docker-registry (TLS + htpasswd) with the fixture images")
	start := time.Now()
	up, err := testenv.StartUpstream(ctx, testenv.FixtureChart(), filepath.Join(out, "upstream"))
	if err != nil {
		return err
	}
	defer up.Stop()
	fmt.Printf("upstream at %s, %d images pushed in %s\n", up.Host, len(up.Digests), time.Since(start).Round(time.Millisecond))

	// The demo's own throwaway password; real ones come from a secret store.
	env := append(os.Environ(), "COSIGN_PASSWORD=demo-only-password")
	p7 := func(stdin string, args ...string) error {
		fmt.Printf("\n$ p7bundle %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir, cmd.Env = out, env
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		return cmd.Run()
	}
	step("keygen")
	if err := p7("", "keygen", "--output-prefix", "cosign"); err != nil {
		return err
	}
	step("build (pulls through --mirror, as from a corporate pull-through cache)")
	bundlePath := "pseven-2023.09.25.tar.zst"
	if err := p7(up.Password+"\n", "build", "--chart", testenv.FixtureChart(), "--key", "cosign.key", "-o", bundlePath,
		"--mirror", up.MirrorFlag(), "--ca-file", up.CAFile, "--username", up.Username, "--password-stdin"); err != nil {
		return err
	}
	step("verify (archive and table of contents signatures, every blob, the signed provenance)")
	if err := p7("", "verify", bundlePath, "--key", "cosign.pub"); err != nil {
		return err
	}
	step("inspect")
	if err := p7("", "inspect", bundlePath); err != nil {
		return err
	}
	step("inspect --cyclonedx > bom.json (the inventory for scanners)")
	bom, err := os.Create(filepath.Join(out, "bom.json"))
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "inspect", bundlePath, "--cyclonedx")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = out, env, bom, os.Stdout
	err = cmd.Run()
	bom.Close()
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s/bom.json\n", out)
	fmt.Printf("\nbundle: %s/%s (+ .sig, .sha256, .sigstore.json, .intoto.jsonl)\n", out, bundlePath)
	if skipSite {
		return nil
	}

	step("starting the air-gapped site: registry + single-node Kubernetes in a network namespace with no route out")
	start = time.Now()
	site, err := testsite.Start(ctx, testsite.Options{})
	if err != nil {
		return err
	}
	defer func() {
		step("tearing the site down")
		if err := site.Stop(); err != nil {
			fmt.Println("teardown:", err)
		}
	}()
	fmt.Printf("site up in %s: registry %s, API %s\n", time.Since(start).Round(time.Millisecond), site.Registry, site.APIServer)

	step("install, run INSIDE the site (the egress guard lets it dial only the site registry and the API)")
	args := []string{"install", bundlePath, "--key", "cosign.pub", "--registry", site.Registry, "--ca-file", site.RegistryCAFile,
		"--registry-username", site.RegistryUsername, "--registry-password-stdin", "--kubeconfig", site.Kubeconfig,
		"-n", "pseven-ns", "--create-namespace", "--wait", "--timeout", "10m"}
	fmt.Printf("\n$ p7bundle %s\n", strings.Join(args, " "))
	cmd = site.Command(ctx, bin, args...)
	cmd.Dir = out
	cmd.Stdin = strings.NewReader(site.RegistryPassword + "\n")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	start = time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	fmt.Printf("install took %s\n", time.Since(start).Round(time.Millisecond))
	pods, err := site.Kubectl(ctx, "get", "pods", "-n", "pseven-ns", "-o", "wide")
	if err != nil {
		return err
	}
	fmt.Printf("\n$ kubectl get pods -n pseven-ns -o wide\n%s", pods)

	step("support: what vendor support asks for, in one archive, secrets redacted")
	args = []string{"support", "-n", "pseven-ns", "--bundle", bundlePath, "-o", "support.tar.zst", "--kubeconfig", site.Kubeconfig}
	fmt.Printf("\n$ p7bundle %s\n", strings.Join(args, " "))
	cmd = site.Command(ctx, bin, args...)
	cmd.Dir = out
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("support: %w", err)
	}
	fmt.Printf("\ndemo done: %s\n", out)
	return nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }
