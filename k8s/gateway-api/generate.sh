#!/usr/bin/env bash
# Regenerates sluice's typed Gateway API definitions (src/sources/kubernetes/gateway/api/)
# from the CRDs in crds/, which are Gateway API v1.6.1's standard channel, unchanged
# (config/crd/standard/ of kubernetes-sigs/gateway-api at tag v1.6.1). HTTPRoute is read from
# the experimental channel's CRD (crds/experimental/, config/crd/experimental/ at the same tag),
# a superset of the standard one, so that sluice sees `rules[].retry` and refuses the
# experimental fields it does not implement instead of never seeing them.
#
# The `gateway-api` crate would be the usual choice, but its releases are built on kube 4
# and k8s-openapi 0.28, and sluice is on kube 5 and k8s-openapi 0.29; kopium, the generator
# that crate uses, writes the same kind of code against sluice's versions.
#
# Usage: k8s/gateway-api/generate.sh   (installs kopium 0.24.1 with cargo when missing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../src/sources/kubernetes/gateway/api"
kopium_version=0.24.1
if ! command -v kopium >/dev/null || [[ "$(kopium --version)" != "kopium $kopium_version" ]]; then
    cargo install kopium --version "$kopium_version" --locked --root "${CARGO_HOME:-$HOME/.cargo}"
fi
for kind in gatewayclasses gateways listenersets httproutes grpcroutes tlsroutes tcproutes referencegrants \
    backendtlspolicies; do
    crd="$here/crds/gateway.networking.k8s.io_$kind.yaml"
    if [[ -f "$here/crds/experimental/gateway.networking.k8s.io_$kind.yaml" ]]; then
        crd="$here/crds/experimental/gateway.networking.k8s.io_$kind.yaml"
    fi
    kopium -f "$crd" --api-version v1 \
        --derive PartialEq \
        | sed -e "/^\/\/ kopium command:/d" > "$out/$kind.rs"
done
rustfmt --edition 2021 "$out"/*.rs
