// Package installer composes bundle, mirror and manifests into the site-side install flow (see the install issue).
package installer
