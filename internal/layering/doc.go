// Package layering holds no code: its test checks that each package
// imports only what its layer may (README "Layout").
package layering
