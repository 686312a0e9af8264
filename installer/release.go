package installer

import (
	"errors"
	"fmt"
	"sort"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	"sigs.k8s.io/yaml"

	"github.com/p7bundle/p7bundle/manifests"
)

// ErrReleaseState: the release's history forbids going on (a stuck
// revision, a downgrade); nothing was changed.
var ErrReleaseState = errors.New("release state")

// Step is what install does with the Helm release.
type Step string

const (
	// StepInstall: no release of that name holds anything.
	StepInstall Step = "install"
	// StepCleanInstall: only revisions that never deployed exist (a failed
	// first install); they are uninstalled first, the guide's "clean
	// environment". Never chosen once any revision was deployed.
	StepCleanInstall Step = "clean install"
	// StepUpgrade: some revision was deployed; Helm upgrades in place, also
	// from a failed last revision.
	StepUpgrade Step = "upgrade"
)

// ReleaseState is a release's whole history, oldest first, and what it
// allows. The last revision alone cannot tell a failed first install from
// a failed upgrade of a running site; the history can.
type ReleaseState struct {
	Name    string
	History []*release.Release
	// Current is the revision whose workloads run: the newest deployed
	// one, else the newest superseded one. Nil when none ever deployed.
	Current *release.Release
}

// Last is the newest revision, or nil.
func (s *ReleaseState) Last() *release.Release {
	if len(s.History) == 0 {
		return nil
	}
	return s.History[len(s.History)-1]
}

// EverDeployed says whether any revision was ever deployed; if so, the
// release is production and p7bundle never uninstalls it.
func (s *ReleaseState) EverDeployed() bool { return s.Current != nil }

// ReadRelease loads the whole history of a release.
func ReadRelease(cfg *action.Configuration, name string) (*ReleaseState, error) {
	h, err := cfg.Releases.History(name)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, fmt.Errorf("%w: reading the history of release %s: %v", ErrHelm, name, err)
	}
	sort.Slice(h, func(i, j int) bool { return h[i].Version < h[j].Version })
	s := &ReleaseState{Name: name, History: h}
	for _, r := range h {
		switch r.Info.Status {
		case release.StatusDeployed:
			s.Current = r
		case release.StatusSuperseded:
			if s.Current == nil || s.Current.Info.Status != release.StatusDeployed {
				s.Current = r
			}
		}
	}
	return s, nil
}

// Plan decides the Helm step. A pending last revision (a run that was
// killed, or one still running) is an error unless recover is set; then
// Recover must run before the step.
func (s *ReleaseState) Plan(recover bool) (Step, error) {
	last := s.Last()
	switch {
	case last == nil:
		return StepInstall, nil
	case last.Info.Status.IsPending() && !recover:
		return "", s.pendingError(last)
	case last.Info.Status == release.StatusUninstalled: // nothing runs
		return StepInstall, nil
	case s.EverDeployed():
		return StepUpgrade, nil
	case s.History[0].Version != 1:
		// Helm's --history-max pruned the start: a deployed revision may
		// have been among the missing ones, so nothing is uninstalled.
		return "", fmt.Errorf("%w: release %s has no deployed revision, but its history starts at revision %d (older ones were pruned), so p7bundle cannot tell that none ever ran and will not uninstall it; inspect it with: helm history %s -n %s",
			ErrReleaseState, s.Name, s.History[0].Version, s.Name, last.Namespace)
	default:
		return StepCleanInstall, nil
	}
}

func (s *ReleaseState) pendingError(last *release.Release) error {
	fix := fmt.Sprintf("rerun with --recover to uninstall the never-deployed release %s first", s.Name)
	if s.EverDeployed() {
		fix = fmt.Sprintf("rerun with --recover to roll back to revision %d (the last deployed) and upgrade, or run: helm rollback %s %d -n %s",
			s.Current.Version, s.Name, s.Current.Version, last.Namespace)
	}
	return fmt.Errorf("%w: release %s revision %d is %s: a p7bundle or helm run was interrupted (or is still running); if none is running, %s",
		ErrReleaseState, s.Name, last.Version, last.Info.Status, fix)
}

// CheckDowngrade refuses a chart older than the running one, ordered as
// Helm orders chart versions (the vendor's 2023.09.25 parses as 2023.9.25).
func (s *ReleaseState) CheckDowngrade(newVersion string, allow bool) error {
	if s.Current == nil || s.Current.Chart == nil || s.Current.Chart.Metadata == nil || allow {
		return nil
	}
	old := s.Current.Chart.Metadata.Version
	nv, err1 := semver.NewVersion(newVersion)
	ov, err2 := semver.NewVersion(old)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%w: cannot order chart versions %q and %q (release %s runs the latter); --allow-downgrade skips the check", ErrReleaseState, newVersion, old, s.Name)
	}
	if nv.LessThan(ov) {
		return fmt.Errorf("%w: chart %s is older than %s, which release %s runs (revision %d): refusing to downgrade (--allow-downgrade overrides)",
			ErrReleaseState, newVersion, old, s.Name, s.Current.Version)
	}
	return nil
}

func (s *ReleaseState) describe() string {
	last := s.Last()
	switch {
	case last == nil:
		return "not installed"
	case s.Current == nil:
		return fmt.Sprintf("revision %d %s, never deployed", last.Version, last.Info.Status)
	case s.Current == last:
		return fmt.Sprintf("revision %d %s (chart %s)", last.Version, last.Info.Status, last.Chart.Metadata.Version)
	}
	return fmt.Sprintf("revision %d runs (chart %s), revision %d is %s", s.Current.Version, s.Current.Chart.Metadata.Version, last.Version, last.Info.Status)
}

// secretKeys are the top-level value keys that hold the deployment
// secrets: those of the kept secrets file, else (a release installed
// without p7bundle) the running values no chart defines.
func (s *ReleaseState) secretKeys(kept []byte, chartValues map[string]interface{}) []string {
	var keys []string
	if kept != nil {
		var m map[string]interface{}
		if yaml.Unmarshal(kept, &m) == nil {
			for k := range m {
				keys = append(keys, k)
			}
		}
	} else if s.Current != nil {
		for k := range s.Current.Config {
			_, inNew := chartValues[k]
			_, inOld := s.Current.Chart.Values[k]
			if !inNew && !inOld {
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

// userValues is what the admin chose for the running revision, without
// secrets or what p7bundle itself wrote.
func (s *ReleaseState) userValues(ch *manifests.Chart, sourceRegistry, sitePath string, secretKeys []string) map[string]interface{} {
	defaults := []map[string]interface{}{s.Current.Chart.Values}
	if d, err := chartutil.CoalesceValues(ch.Chart, map[string]interface{}{}); err == nil {
		defaults = append(defaults, d.AsMap())
	}
	return manifests.UserValues(s.Current.Config, defaults, sourceRegistry, sitePath, secretKeys...)
}
