//go:build tools

// Package vaulttools pins the Vault server the signing tests run. It is a
// separate module so that github.com/hashicorp/vault never enters p7bundle's
// go.mod; build.sh builds the blank-imported command from it.
package vaulttools

import (
	_ "github.com/hashicorp/vault"
)
