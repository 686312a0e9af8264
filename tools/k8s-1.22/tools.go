//go:build tools

// Package k8stools pins the Kubernetes commands the test site runs. It is a
// separate module so that k8s.io/kubernetes never enters p7bundle's go.mod;
// build.sh builds the blank-imported commands from it.
package k8stools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"

	// 1.22 generated its OpenAPI code at build time; build.sh runs this generator.
	_ "k8s.io/kube-openapi/cmd/openapi-gen"
)
