// Package version holds the p7bundle version, set at link time:
// -ldflags "-X github.com/p7bundle/p7bundle/internal/version.Version=v1.2.3
// -X github.com/p7bundle/p7bundle/internal/version.Commit=<sha>".
package version

// Version is "dev" in untagged builds.
var Version = "dev"

// Commit is the git commit built from; empty when not stamped.
var Commit = ""
