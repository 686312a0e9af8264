package installer

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
)

// helmRun applies a planned Step through the Helm SDK.
type helmRun struct {
	cfg                *action.Configuration
	namespace, release string
	timeout            time.Duration
	wait               bool
	step               func(format string, args ...any)
	// approved goes into the revision's description, so helm history,
	// the backups and support show who approved what ran.
	approved []Approved
}

// apply runs step for state; a pending last revision (allowed only with
// --recover) is first rolled back to the running revision, or, if none
// ever ran, removed with the rest of the failed install.
func (h *helmRun) apply(ctx context.Context, state *ReleaseState, step Step, ch *chart.Chart, vals map[string]interface{}) (*release.Release, error) {
	last := state.Last()
	switch step {
	case StepUpgrade:
		if last.Info.Status.IsPending() {
			if err := h.rollback(state); err != nil {
				return nil, err
			}
		} else if last.Info.Status == release.StatusFailed {
			h.step("release %s: revision %d failed; revision %d still runs: retrying as an upgrade (nothing is uninstalled)", h.release, last.Version, state.Current.Version)
		}
		h.step("upgrading release %s (revision %d, chart %s) to chart %s", h.release, state.Current.Version, state.Current.Chart.Metadata.Version, ch.Metadata.Version)
		up := action.NewUpgrade(h.cfg)
		up.Namespace, up.Timeout, up.Wait, up.WaitForJobs = h.namespace, h.timeout, h.wait, h.wait
		up.Description = approvalDescription("Upgrade complete", h.approved)
		return up.RunWithContext(ctx, h.release, ch, vals)
	case StepCleanInstall:
		h.step("release %s: no revision was ever deployed (last: revision %d, %s): uninstalling the failed installation before installing (the guide's clean environment)",
			h.release, last.Version, last.Info.Status)
		un := action.NewUninstall(h.cfg)
		un.Timeout, un.Wait = h.timeout, true
		if _, err := un.Run(h.release); err != nil {
			return nil, fmt.Errorf("%w: uninstalling the never-deployed release %s: %v", ErrHelm, h.release, err)
		}
	}
	h.step("installing release %s (chart %s %s) into %s", h.release, ch.Metadata.Name, ch.Metadata.Version, h.namespace)
	in := action.NewInstall(h.cfg)
	in.ReleaseName, in.Namespace, in.Timeout, in.Wait, in.WaitForJobs = h.release, h.namespace, h.timeout, h.wait, h.wait
	in.Description = approvalDescription("Install complete", h.approved)
	// An uninstalled release whose history was kept reuses its name.
	in.Replace = last != nil
	return in.RunWithContext(ctx, ch, vals)
}

// rollback returns a release stuck in pending-* to its running revision.
func (h *helmRun) rollback(state *ReleaseState) error {
	last := state.Last()
	h.step("--recover: release %s revision %d is %s: rolling back to revision %d, the last deployed", h.release, last.Version, last.Info.Status, state.Current.Version)
	rb := action.NewRollback(h.cfg)
	rb.Version, rb.Timeout, rb.Wait, rb.WaitForJobs = state.Current.Version, h.timeout, h.wait, h.wait
	if err := rb.Run(h.release); err != nil {
		return fmt.Errorf("%w: --recover: rolling release %s back to revision %d: %v", ErrHelm, h.release, state.Current.Version, err)
	}
	// Helm leaves the interrupted revision pending forever; say what it was.
	last.SetStatus(release.StatusFailed, "interrupted; recovered by p7bundle --recover")
	if err := h.cfg.Releases.Update(last); err != nil {
		h.step("WARNING: marking the interrupted revision %d failed: %v", last.Version, err)
	}
	return nil
}

// approvalDescription is Helm's own description of a deployed revision
// plus each approval it ran under: the approver's key identity and the
// signed line (file, number, sha256), enough to find and re-verify it.
// Empty without approvals, so Helm's default stays.
func approvalDescription(done string, approved []Approved) string {
	if len(approved) == 0 {
		return ""
	}
	var parts []string
	for _, a := range approved {
		parts = append(parts, fmt.Sprintf("%s (%s line %d, %s)", a.Approver, filepath.Base(a.File), a.Line, a.Digest))
	}
	return done + "; approved by " + strings.Join(parts, ", ")
}
