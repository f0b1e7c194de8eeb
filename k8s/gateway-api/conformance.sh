#!/usr/bin/env bash
# Runs the official Gateway API conformance suite (v1.6.1) against sluice on a live cluster
# (kind or k3s). Not run in CI, which has no cluster; tests/gateway_api.rs reproduces the
# suite's tests against the fake API server instead.
#
# Needs: kubectl pointing at the cluster, docker, go (1.24+), git, and a LoadBalancer
# implementation (k3s has one; on kind, run cloud-provider-kind). The image is built from
# this tree and loaded into kind when the context is a kind cluster.
#
# Usage: k8s/gateway-api/conformance.sh [extra go test args, e.g. -run TestConformance/HTTPRoute]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
version=v1.6.1
image=sluice:conformance
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== Gateway API $version CRDs"
kubectl apply -k "$here"
# The experimental channel's HTTPRoute: `rules[].retry` (HTTPRouteRetry).
kubectl apply --server-side --force-conflicts -f "$here/crds/experimental/"

echo "== image $image"
docker build -f "$root/docker/Dockerfile" -t "$image" "$root"
context="$(kubectl config current-context)"
if [[ "$context" == kind-* ]]; then
    kind load docker-image "$image" --name "${context#kind-}"
fi

echo "== sluice as the Gateway controller"
kubectl apply -k "$root/k8s"
# The shipped config serves Ingresses; this one serves Gateways on the same listeners.
cat > "$work/sluice.yaml" <<'CONFIG_HEAD'
server:
  grace_period: 30s
admin:
  listen: 127.0.0.1:9901
  metrics_listen: 0.0.0.0:9902
access_log: { path: stdout, format: json }
# Port 443 takes TLS passthrough (TLSRoute) by server name; the other names are relayed to
# the HTTPS listener on loopback, which terminates them (HTTPRoute, GRPCRoute over h2).
listeners:
  - name: http
    listen: 0.0.0.0:8080
    h2c: true
  # Gateway ports 8080 (GatewayPort8080) and 8090 (HTTPRouteListenerPortMatching).
  - { name: http8080, listen: 0.0.0.0:8088, h2c: true }
  - { name: http8090, listen: 0.0.0.0:8098, h2c: true }
  # Gateway port 8443: TLS listeners in mode Terminate (TLSRouteModeTerminate).
  - name: terminate8443
    listen: 0.0.0.0:9443
    protocol: tcp
    tls:
      certificates:
        - { cert: /etc/sluice/tls/tls.crt, key: /etc/sluice/tls/tls.key }
  # Gateway port 8883: TLS listeners of both modes (TLSRouteModeMixed).
  - name: mixed8883
    listen: 0.0.0.0:9883
    protocol: tcp
    sni_routing: true
    tls:
      certificates:
        - { cert: /etc/sluice/tls/tls.crt, key: /etc/sluice/tls/tls.key }
  - name: edge
    listen: 0.0.0.0:8443
    protocol: tcp
    sni_routing: true
  - name: https
    listen: 127.0.0.1:8444
    proxy_protocol: true
    tls:
      certificates:
        - { cert: /etc/sluice/tls/tls.crt, key: /etc/sluice/tls/tls.key }
  # The Gateways whose tests need an address each (HTTPRouteMultipleGateways,
  # GatewayHTTPListenerIsolation, TLSRouteHostnameIntersection), each served on listeners of
  # its own behind a LoadBalancer Service of its own (created below).
  - { name: http-same-namespace, listen: 0.0.0.0:8180, h2c: true }
  - { name: http-all-namespaces, listen: 0.0.0.0:8181, h2c: true }
  - { name: http-isolation, listen: 0.0.0.0:8182, h2c: true }
  - { name: http-isolation-intersection, listen: 0.0.0.0:8183, h2c: true }
  - { name: tls-x-1, listen: 0.0.0.0:8541, protocol: tcp, sni_routing: true }
  - { name: tls-x-2, listen: 0.0.0.0:8542, protocol: tcp, sni_routing: true }
  - { name: tls-x-3, listen: 0.0.0.0:8543, protocol: tcp, sni_routing: true }
  - { name: tls-x-4, listen: 0.0.0.0:8544, protocol: tcp, sni_routing: true }
  # The Gateways that validate client certificates (spec.tls.frontend): a sluice listener
  # checks the certificates of every name it serves, so each Gateway port gets its own.
  - { name: http-cv-invalid-default, listen: 0.0.0.0:8184, h2c: true }
CONFIG_HEAD
for listener in cv-default-443:8641 cv-default-8443:8642 cv-fallback-443:8643 cv-fallback-8443:8644 \
    cv-invalid-443:8645 cv-invalid-7443:8646 cv-invalid-8443:8647 cv-invalid-6443:8648 \
    cv-invalid-default-443:8649; do
    IFS=: read -r name target <<< "$listener"
    cat >> "$work/sluice.yaml" <<LISTENER
  - name: https-$name
    listen: 0.0.0.0:$target
    tls:
      certificates:
        - { cert: /etc/sluice/tls/tls.crt, key: /etc/sluice/tls/tls.key }
LISTENER
done
cat >> "$work/sluice.yaml" <<'CONFIG'
gateway:
  listeners:
    - { port: 80, listener: http }
    - { port: 8080, listener: http8080 }
    - { port: 8090, listener: http8090 }
    - { port: 8443, listener: terminate8443 }
    - { port: 8883, listener: mixed8883 }
    - { port: 443, listener: https }
    - { port: 443, listener: edge }
  publish: { service: sluice/sluice }
  dedicated:
    - gateway: gateway-conformance-infra/same-namespace
      listeners: [{ port: 80, listener: http-same-namespace }]
      publish: { service: sluice/gw-same-namespace }
    - gateway: gateway-conformance-infra/all-namespaces
      listeners: [{ port: 80, listener: http-all-namespaces }]
      publish: { service: sluice/gw-all-namespaces }
    - gateway: gateway-conformance-infra/http-listener-isolation
      listeners: [{ port: 80, listener: http-isolation }]
      publish: { service: sluice/gw-isolation }
    - gateway: gateway-conformance-infra/http-listener-isolation-with-hostname-intersection
      listeners: [{ port: 80, listener: http-isolation-intersection }]
      publish: { service: sluice/gw-isolation-intersection }
    - gateway: gateway-conformance-infra/gw-tlsroute-exact-hostname-x-1
      listeners: [{ port: 443, listener: tls-x-1 }]
      publish: { service: sluice/gw-tls-x-1 }
    - gateway: gateway-conformance-infra/gw-tlsroute-more-specific-wc-hostname-x-2
      listeners: [{ port: 443, listener: tls-x-2 }]
      publish: { service: sluice/gw-tls-x-2 }
    - gateway: gateway-conformance-infra/gw-tlsroute-less-specific-wc-hostname-x-3
      listeners: [{ port: 443, listener: tls-x-3 }]
      publish: { service: sluice/gw-tls-x-3 }
    - gateway: gateway-conformance-infra/gw-tlsroute-empty-hostname-x-4
      listeners: [{ port: 443, listener: tls-x-4 }]
      publish: { service: sluice/gw-tls-x-4 }
    - gateway: gateway-conformance-infra/client-validation-default
      listeners: [{ port: 443, listener: https-cv-default-443 }, { port: 8443, listener: https-cv-default-8443 }]
      publish: { service: sluice/gw-cv-default }
    - gateway: gateway-conformance-infra/client-validation-insecure-fallback
      listeners: [{ port: 443, listener: https-cv-fallback-443 }, { port: 8443, listener: https-cv-fallback-8443 }]
      publish: { service: sluice/gw-cv-fallback }
    - gateway: gateway-conformance-infra/gateway-with-invalid-client-cert-validation
      listeners:
        - { port: 443, listener: https-cv-invalid-443 }
        - { port: 7443, listener: https-cv-invalid-7443 }
        - { port: 8443, listener: https-cv-invalid-8443 }
        - { port: 6443, listener: https-cv-invalid-6443 }
      publish: { service: sluice/gw-cv-invalid }
    - gateway: gateway-conformance-infra/invalid-default-client-validation-config
      listeners: [{ port: 80, listener: http-cv-invalid-default }, { port: 443, listener: https-cv-invalid-default-443 }]
      publish: { service: sluice/gw-cv-invalid-default }
  leader_election: { namespace: sluice }
routes:
  - { name: terminate, listener: edge, upstream: local-https }
upstreams:
  - { name: local-https, protocol: tcp, endpoints: ["127.0.0.1:8444"], proxy_protocol: v2 }
CONFIG
kubectl -n sluice create configmap sluice-config --from-file=sluice.yaml="$work/sluice.yaml" \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl -n sluice get secret sluice-default-tls >/dev/null 2>&1 || {
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=default.sluice \
        -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
    kubectl -n sluice create secret tls sluice-default-tls --cert="$work/tls.crt" --key="$work/tls.key"
}
kubectl -n sluice get service sluice -o jsonpath='{.spec.ports[*].name}' | grep -qw http8080 ||
kubectl -n sluice patch service sluice --type=json -p '[
  {"op": "add", "path": "/spec/ports/-", "value": {"name": "http8080", "port": 8080, "targetPort": 8088}},
  {"op": "add", "path": "/spec/ports/-", "value": {"name": "http8090", "port": 8090, "targetPort": 8098}},
  {"op": "add", "path": "/spec/ports/-", "value": {"name": "tls8443", "port": 8443, "targetPort": 9443}},
  {"op": "add", "path": "/spec/ports/-", "value": {"name": "tls8883", "port": 8883, "targetPort": 9883}}]'
# A LoadBalancer Service (so an address) per dedicated Gateway, to its own listeners
# (NAME:PORT/TARGET,PORT/TARGET...).
for service in gw-same-namespace:80/8180 gw-all-namespaces:80/8181 \
    gw-isolation:80/8182 gw-isolation-intersection:80/8183 \
    gw-tls-x-1:443/8541 gw-tls-x-2:443/8542 gw-tls-x-3:443/8543 gw-tls-x-4:443/8544 \
    gw-cv-default:443/8641,8443/8642 gw-cv-fallback:443/8643,8443/8644 \
    gw-cv-invalid:443/8645,7443/8646,8443/8647,6443/8648 \
    gw-cv-invalid-default:80/8184,443/8649; do
    IFS=: read -r name mappings <<< "$service"
    ports=""
    for mapping in ${mappings//,/ }; do
        ports="$ports{ name: p${mapping%/*}, port: ${mapping%/*}, targetPort: ${mapping#*/} },"
    done
    kubectl apply -f - <<SERVICE
apiVersion: v1
kind: Service
metadata: { name: $name, namespace: sluice }
spec:
  type: LoadBalancer
  selector: { app.kubernetes.io/name: sluice }
  ports: [${ports%,}]
SERVICE
done
kubectl -n sluice set image deployment/sluice sluice="$image"
kubectl -n sluice rollout restart deployment/sluice
kubectl -n sluice rollout status deployment/sluice --timeout=180s
kubectl apply -f - <<'CLASS'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: sluice
spec:
  controllerName: sluice.dev/gateway-controller
CLASS

# GatewayStaticAddresses: the address sluice is reached on (its Service's), and one it is not.
usable="$(kubectl -n sluice get service sluice -o jsonpath='{.status.loadBalancer.ingress[0].ip}')"

echo "== conformance suite $version"
git clone --quiet --depth 1 --branch "$version" https://github.com/kubernetes-sigs/gateway-api "$work/gateway-api"
cd "$work/gateway-api"
go test ./conformance -run TestConformance -timeout 60m -v -args \
    --gateway-class=sluice \
    --conformance-profiles=GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS \
    --supported-features=Gateway,ListenerSet,GatewayBackendClientCertificate,TLSRouteModeTerminate,TLSRouteModeMixed,GatewayHTTPListenerIsolation,HTTPRouteBackendProtocolWebSocket,HTTPRouteCORS,HTTPRouteBackendRequestHeaderModification,HTTPRouteRequestMultipleMirrors,HTTPRouteRequestPercentageMirror,GatewayPort8080,GatewayStaticAddresses,GatewayAddressEmpty,HTTPRouteParentRefPort,HTTPRouteDestinationPortMatching,HTTPRoute,GRPCRoute,ReferenceGrant,TLSRoute,HTTPRouteQueryParamMatching,HTTPRouteMethodMatching,HTTPRouteResponseHeaderModification,HTTPRoutePathRedirect,HTTPRouteHostRewrite,HTTPRoutePathRewrite,HTTPRouteRequestMirror,HTTPRouteRequestTimeout,HTTPRouteBackendTimeout,HTTPRouteSchemeRedirect,HTTPRoutePortRedirect,HTTPRoute303RedirectStatusCode,HTTPRoute307RedirectStatusCode,HTTPRoute308RedirectStatusCode,HTTPRouteNamedRouteRule,HTTPRouteBackendProtocolH2C,HTTPRouteRetry,HTTPRouteRetryConnectionError,GatewayHTTPSListenerDetectMisdirectedRequests,GatewayFrontendClientCertificateValidation,GatewayFrontendClientCertificateValidationInsecureFallback,BackendTLSPolicy,BackendTLSPolicySANValidation \
    --usable-network-addresses="$usable" --unusable-network-addresses=192.0.2.1 \
    --report-output="$root/gateway-conformance-report.yaml" \
    --organization=sluice-proxy --project=sluice --version=0.1.0 \
    --url=https://github.com/sluice-proxy/sluice --contact=https://github.com/sluice-proxy/sluice/issues \
    "$@"
echo "report: $root/gateway-conformance-report.yaml"
