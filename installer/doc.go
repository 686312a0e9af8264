// Package installer is the site phase: one action per site command, in the
// style of Helm's pkg/action. Push, Values, Lint, Doctor, Install and Support are structs
// whose zero fields mean the documented defaults (Default* constants), each
// with one Run(ctx). Every rule of the site commands lives here, once: the
// signature check before anything is trusted, the egress guard (only the
// site registry and the API server), the release plan that never
// uninstalls a release that ever ran, the secrets sources and the backup.
//
// It composes bundle (reading and verifying), mirror (the site registry)
// and manifests (values and lint) with client-go and the Helm SDK; the
// clients are fields, so tests swap in fakes. It never reaches a host
// outside the site.
package installer
