// Command p7bundle-release signs the binaries `make release` built: see
// internal/release. The key's password comes from $COSIGN_PASSWORD.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/internal/release"
)

func main() {
	dir := flag.String("dir", "dist", "directory of the p7bundle-* binaries")
	key := flag.String("key", "", "cosign private key file or KMS URI")
	version := flag.String("version", "", "the release's version")
	commit := flag.String("commit", "", "the commit it was built from")
	platforms := flag.String("platforms", "", "space-separated OS/ARCH list built")
	flag.Parse()
	if *key == "" || *version == "" {
		fmt.Fprintln(os.Stderr, "p7bundle-release: --key and --version are required")
		os.Exit(2)
	}
	ctx := context.Background()
	s, err := bundle.LoadSigner(ctx, *key, []byte(os.Getenv("COSIGN_PASSWORD")))
	if err == nil {
		err = release.Sign(ctx, *dir, s, release.Parameters{Version: *version, Commit: *commit, Platforms: strings.Fields(*platforms)})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "p7bundle-release: %v\n", err)
		os.Exit(1)
	}
}
