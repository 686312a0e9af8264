package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"

	"github.com/p7bundle/p7bundle/builder"
	"github.com/p7bundle/p7bundle/bundle"
	"github.com/p7bundle/p7bundle/installer"
	"github.com/p7bundle/p7bundle/internal/atomicfile"
	"github.com/p7bundle/p7bundle/internal/egress"
	"github.com/p7bundle/p7bundle/internal/policy"
	"github.com/p7bundle/p7bundle/manifests"
	"github.com/p7bundle/p7bundle/mirror"
)

// Exit codes are part of the CLI contract (README "Exit codes").
const (
	exitOK          = 0
	exitFailure     = 1  // anything not classified below
	exitUsage       = 2  // bad flags or arguments
	exitInput       = 3  // chart, image reference or other input is invalid
	exitRegistry    = 4  // registry: image missing, auth refused, unreachable, platform absent
	exitVerify      = 5  // signature or bundle content verification failed
	exitKey         = 6  // key missing, unreadable, wrong password, or would be overwritten
	exitOutput      = 7  // output cannot be written
	exitLint        = 8  // air-gap lint: the release would pull from outside the site
	exitPreflight   = 9  // the cluster or release is not ready (API, version, namespace, nodes, a doctor FAIL, stuck revision, downgrade)
	exitInstall     = 10 // secrets or Helm install/upgrade failed
	exitInterrupted = 130
)

// exitKinds name the codes in the JSON error object.
var exitKinds = map[int]string{
	exitFailure: "failure", exitUsage: "usage", exitInput: "input", exitRegistry: "registry", exitVerify: "verify",
	exitKey: "key", exitOutput: "output", exitLint: "lint", exitPreflight: "preflight", exitInstall: "install",
	exitInterrupted: "interrupted",
}

func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case isUsage(err) || errors.Is(err, installer.ErrOptions) || strings.Contains(err.Error(), "flag provided but not defined") || strings.HasPrefix(err.Error(), "Required flag"):
		return exitUsage
	case errors.Is(err, installer.ErrLint):
		return exitLint
	case errors.Is(err, installer.ErrSecrets), errors.Is(err, installer.ErrHelm):
		return exitInstall
	case errors.Is(err, egress.ErrDenied):
		return exitRegistry
	// Before the checks for missing files: an output that cannot go where
	// it was asked to is an output error, whatever the cause.
	case errors.Is(err, errOutput), errors.Is(err, installer.ErrOutput), errors.Is(err, builder.ErrOutput), errors.Is(err, atomicfile.ErrWrite),
		errors.Is(err, installer.ErrListen):
		return exitOutput
	case errors.Is(err, bundle.ErrSignature), errors.Is(err, bundle.ErrCorrupt), errors.Is(err, bundle.ErrUnsupported), errors.Is(err, bundle.ErrProvenance), errors.Is(err, bundle.ErrApproval):
		return exitVerify
	case errors.Is(err, bundle.ErrKey), errors.Is(err, bundle.ErrExists):
		return exitKey
	case errors.Is(err, mirror.ErrNotFound), errors.Is(err, mirror.ErrUnauthorized),
		errors.Is(err, mirror.ErrUnreachable), errors.Is(err, mirror.ErrPlatform):
		return exitRegistry
	case errors.Is(err, installer.ErrPreflight), errors.Is(err, installer.ErrReleaseState), errors.Is(err, installer.ErrDoctor):
		return exitPreflight
	case errors.Is(err, manifests.ErrInvalidChart), errors.Is(err, manifests.ErrNoAppVersion),
		errors.Is(err, manifests.ErrNoImages), errors.Is(err, manifests.ErrChartTooLarge),
		errors.Is(err, manifests.ErrInvalidReference), errors.Is(err, manifests.ErrUnmatchedExclude),
		errors.Is(err, manifests.ErrInvalidValues), errors.Is(err, errInput), errors.Is(err, bundle.ErrBase),
		errors.Is(err, mirror.ErrCAFile), errors.Is(err, bundle.ErrNotFile), errors.Is(err, bundle.ErrNotBundle),
		errors.Is(err, policy.ErrPolicy), errors.Is(err, installer.ErrInput):
		return exitInput
	case errors.Is(err, os.ErrNotExist):
		return exitInput
	case errors.Is(err, os.ErrPermission), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EDQUOT):
		return exitOutput
	}
	return exitFailure
}

var (
	errInput  = errors.New("invalid input")
	errOutput = errors.New("cannot write output")
)
