package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/p7bundle/p7bundle/bench/internal/workload"
)

// hauler drives a Hauler v2 binary (HAULER=/path make bench) through the
// same workload: `store sync` + `store save` beside our build, `store load`
// + `store copy` beside our push. Its temporary files go to the scratch
// directory, as ours do.
type hauler struct{ bin string }

// cmd is one hauler invocation on store; args follow the subcommand.
func (h *hauler) cmd(dir, store string, args ...string) cmdSpec {
	return cmdSpec{Dir: dir, Env: []string{"HAULER_TEMP_DIR=" + filepath.Join(dir, "tmp")},
		Argv: append([]string{h.bin, "store", "--store", store, "--retries", "1"}, args...)}
}

// build syncs the workload's images from srcHost into a new store and
// saves it as one archive, recording step.sync, step.save and step.
// wrap places the sync (the network part) on the WAN link, or is nil.
func (h *hauler) build(ctx context.Context, b *Bench, step string, w *workload.Workload, srcHost, dir string, wrap func(cmdSpec) cmdSpec) error {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	var images strings.Builder
	images.WriteString("apiVersion: content.hauler.cattle.io/v1\nkind: Images\nmetadata:\n  name: p7bench\nspec:\n  images:\n")
	for _, img := range w.Images {
		fmt.Fprintf(&images, "    - name: %s/%s:%s\n", srcHost, img.Name, workload.AppVersion)
	}
	manifest := filepath.Join(dir, "images.yaml")
	if err := os.WriteFile(manifest, []byte(images.String()), 0o644); err != nil {
		return err
	}
	store := filepath.Join(dir, "store")
	sync := h.cmd(dir, store, "sync", "-f", manifest)
	if wrap != nil {
		sync = wrap(sync)
	}
	s1, err := b.measure(ctx, step+".sync", sync)
	if err != nil {
		return err
	}
	s2, err := b.measure(ctx, step+".save", h.cmd(dir, store, "save", "--filename", filepath.Join(dir, "haul.tar.zst")))
	if err != nil {
		return err
	}
	b.composite(step, s1, s2)
	return os.RemoveAll(store)
}

// install loads the archive build wrote in dir into a new store and copies
// it into the registry at dst.
func (h *hauler) install(ctx context.Context, b *Bench, dir, dst string) error {
	store := filepath.Join(dir, "store-load")
	s1, err := b.measure(ctx, "install.hauler.load", h.cmd(dir, store, "load", "--filename", filepath.Join(dir, "haul.tar.zst")))
	if err != nil {
		return err
	}
	s2, err := b.measure(ctx, "install.hauler.copy", h.cmd(dir, store, "copy", "--plain-http", "registry://"+dst))
	if err != nil {
		return err
	}
	b.composite("install.hauler", s1, s2)
	return os.RemoveAll(store)
}
