#!/usr/bin/env bash
# Builds kube-apiserver v1.37.2 into OUT (default bin/kube-apiserver-v1.37.2
# at the repository root) unless it is there already, and prints its path.
# The first build takes 8-10 minutes and ~2.4 GB of memory; later ones come
# from the Go build cache.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-$root/bin/kube-apiserver-v1.37.2}"
if [ ! -x "$out" ]; then
	mkdir -p "$(dirname "$out")"
	echo "ci: building kube-apiserver v1.37.2 (8-10 minutes the first time)" >&2
	cd "$root/.ci/kube-apiserver"
	go build -trimpath -o "$out.tmp" -ldflags "-s -w \
		-X k8s.io/component-base/version.gitVersion=v1.37.2 \
		-X k8s.io/component-base/version.gitMajor=1 \
		-X k8s.io/component-base/version.gitMinor=37" .
	mv "$out.tmp" "$out"
fi
echo "$out"
