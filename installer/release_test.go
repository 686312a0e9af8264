package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	helmtime "helm.sh/helm/v3/pkg/time"
)

func testChart(version string) *chart.Chart {
	return &chart.Chart{
		Metadata:  &chart.Metadata{APIVersion: "v2", Name: "pseven", Version: version, AppVersion: "6.47.4712"},
		Templates: []*chart.File{{Name: "templates/cm.yaml", Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n")}},
	}
}

// memoryConfig is a Helm configuration over in-memory release storage
// holding revisions 1..n with the given statuses.
func memoryConfig(t *testing.T, statuses ...release.Status) *action.Configuration {
	t.Helper()
	cfg := &action.Configuration{
		Releases:     storage.Init(driver.NewMemory()),
		KubeClient:   &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities,
		Log:          func(string, ...interface{}) {},
	}
	for i, st := range statuses {
		rel := &release.Release{
			Name: "pseven-rl", Namespace: "pseven-ns", Version: i + 1,
			Chart:  testChart("2023.09.25"),
			Config: map[string]interface{}{"postgres": map[string]interface{}{"host": fmt.Sprintf("db-r%d", i+1)}},
			Info:   &release.Info{Status: st, LastDeployed: helmtime.Now()},
		}
		if err := cfg.Releases.Create(rel); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

func statuses(t *testing.T, cfg *action.Configuration) string {
	t.Helper()
	s, err := ReadRelease(cfg, "pseven-rl")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range s.History {
		out = append(out, fmt.Sprintf("%d:%s", r.Version, r.Info.Status))
	}
	return strings.Join(out, " ")
}

func TestReleaseHistoryShapes(t *testing.T) {
	const (
		deployed    = release.StatusDeployed
		failed      = release.StatusFailed
		superseded  = release.StatusSuperseded
		uninstalled = release.StatusUninstalled
	)
	for _, tc := range []struct {
		name    string
		history []release.Status
		recover bool
		step    Step
		pending bool   // Plan refuses without --recover
		after   string // the history once apply ran
	}{
		{name: "none", step: StepInstall, after: "1:deployed"},
		{name: "deployed", history: []release.Status{deployed}, step: StepUpgrade, after: "1:superseded 2:deployed"},
		{name: "deployed then failed upgrade", history: []release.Status{superseded, deployed, failed}, step: StepUpgrade,
			after: "1:superseded 2:superseded 3:failed 4:deployed"},
		{name: "failed first install", history: []release.Status{failed}, step: StepCleanInstall, after: "1:deployed"},
		{name: "superseded failed failed", history: []release.Status{superseded, failed, failed}, step: StepUpgrade,
			after: "1:superseded 2:failed 3:superseded 4:deployed"},
		{name: "pending-upgrade", history: []release.Status{deployed, release.StatusPendingUpgrade}, pending: true},
		{name: "pending-upgrade recovered", history: []release.Status{superseded, deployed, release.StatusPendingUpgrade}, recover: true,
			step: StepUpgrade, after: "1:superseded 2:superseded 3:failed 4:superseded 5:deployed"},
		{name: "pending-install", history: []release.Status{release.StatusPendingInstall}, pending: true},
		{name: "pending-install recovered", history: []release.Status{release.StatusPendingInstall}, recover: true,
			step: StepCleanInstall, after: "1:deployed"},
		{name: "pending-rollback", history: []release.Status{deployed, failed, release.StatusPendingRollback}, pending: true},
		{name: "uninstalled, history kept", history: []release.Status{superseded, uninstalled}, step: StepInstall,
			after: "1:superseded 2:superseded 3:deployed"},
		{name: "uninstalled only", history: []release.Status{uninstalled}, step: StepInstall, after: "1:superseded 2:deployed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := memoryConfig(t, tc.history...)
			state, err := ReadRelease(cfg, "pseven-rl")
			if err != nil {
				t.Fatal(err)
			}
			step, err := state.Plan(tc.recover)
			if tc.pending {
				if !errors.Is(err, ErrReleaseState) || !strings.Contains(err.Error(), "pending-") || !strings.Contains(err.Error(), "--recover") {
					t.Fatalf("Plan = %v, want the pending error naming --recover", err)
				}
				return
			}
			if err != nil || step != tc.step {
				t.Fatalf("Plan = %q, %v; want %q", step, err, tc.step)
			}
			everDeployed := state.EverDeployed()
			var said []string
			h := &helmRun{cfg: cfg, namespace: "pseven-ns", release: "pseven-rl", timeout: time.Minute, wait: true,
				step: func(f string, a ...any) { said = append(said, fmt.Sprintf(f, a...)) }}
			rel, err := h.apply(context.Background(), state, step, testChart("2023.10.30"), map[string]interface{}{})
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			if rel.Info.Status != release.StatusDeployed {
				t.Errorf("release is %s", rel.Info.Status)
			}
			if got := statuses(t, cfg); got != tc.after {
				t.Errorf("history after %s = %q, want %q", step, got, tc.after)
			}
			uninstalled := strings.Contains(strings.Join(said, "\n"), "uninstalling")
			if everDeployed && uninstalled {
				t.Errorf("a release that was once deployed was uninstalled: %q", said)
			}
			if step == StepCleanInstall && !uninstalled {
				t.Errorf("the clean install did not say it uninstalls: %q", said)
			}
		})
	}
}

func TestPendingErrorNamesTheFix(t *testing.T) {
	cfg := memoryConfig(t, release.StatusSuperseded, release.StatusDeployed, release.StatusPendingUpgrade)
	state, _ := ReadRelease(cfg, "pseven-rl")
	_, err := state.Plan(false)
	for _, want := range []string{"revision 3 is pending-upgrade", "roll back to revision 2", "helm rollback pseven-rl 2 -n pseven-ns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("pending error %v lacks %q", err, want)
		}
	}
}

func TestDowngradeRefused(t *testing.T) {
	cfg := memoryConfig(t, release.StatusDeployed, release.StatusFailed)
	state, _ := ReadRelease(cfg, "pseven-rl")
	if err := state.CheckDowngrade("2023.08.28", false); !errors.Is(err, ErrReleaseState) || !strings.Contains(err.Error(), "2023.09.25") {
		t.Errorf("downgrade: %v", err)
	}
	if err := state.CheckDowngrade("2023.9.3", false); !errors.Is(err, ErrReleaseState) {
		t.Errorf("2023.9.3 < 2023.09.25 accepted: %v", err)
	}
	for _, ok := range []string{"2023.09.25", "2023.10.02", "2023.10.30", "2024.01.08"} {
		if err := state.CheckDowngrade(ok, false); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	if err := state.CheckDowngrade("2023.08.28", true); err != nil {
		t.Errorf("--allow-downgrade: %v", err)
	}
	never, _ := ReadRelease(memoryConfig(t, release.StatusFailed), "pseven-rl")
	if err := never.CheckDowngrade("2020.01.01", false); err != nil {
		t.Errorf("nothing runs, yet: %v", err)
	}
}

// Helm's --history-max can prune the deployed start of a history; what is
// left (failed revisions only) must not be taken for a failed first install.
func TestPrunedHistoryIsNeverUninstalled(t *testing.T) {
	cfg := memoryConfig(t, release.StatusSuperseded, release.StatusFailed, release.StatusFailed)
	if _, err := cfg.Releases.Delete("pseven-rl", 1); err != nil {
		t.Fatal(err)
	}
	state, _ := ReadRelease(cfg, "pseven-rl")
	for _, recover := range []bool{false, true} {
		step, err := state.Plan(recover)
		if !errors.Is(err, ErrReleaseState) || !strings.Contains(err.Error(), "history starts at revision 2") {
			t.Errorf("Plan(recover=%v) = %q, %v; want a refusal", recover, step, err)
		}
	}
}
