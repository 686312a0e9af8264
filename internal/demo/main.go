// Command demo runs p7bundle's main job on the built-in fixtures: an
// upstream registry standing in for registry.pseven.io, a key pair, a
// build through --mirror, then verify and inspect. `make demo` runs it.
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

	"github.com/p7bundle/p7bundle/internal/testenv"
)

func main() {
	bin := flag.String("bin", "bin/p7bundle", "p7bundle binary to demonstrate")
	out := flag.String("out", "demo-out", "directory for the key pair and the bundle")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *bin, *out); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, out string) error {
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
	step("verify")
	if err := p7("", "verify", bundlePath, "--key", "cosign.pub"); err != nil {
		return err
	}
	step("inspect")
	if err := p7("", "inspect", bundlePath); err != nil {
		return err
	}
	fmt.Printf("\ndemo done: %s/%s (+ .sig, .sha256, .sigstore.json)\n", out, bundlePath)
	return nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }
