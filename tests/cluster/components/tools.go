//go:build tools

// Package tools records the commands that build.sh builds, so that
// `go mod tidy` keeps their dependencies in go.mod and go.sum. It is never
// compiled (the build tag is never set).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
