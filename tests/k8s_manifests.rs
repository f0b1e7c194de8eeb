//! The kustomize base in k8s/: both shapes render to valid Kubernetes objects; the
//! Deployment shape passes the "restricted" Pod Security Standard; RBAC grants only what
//! sluice uses; the image is the one docker/Dockerfile builds; the embedded configs
//! validate; the DaemonSet keeps its socket handoff.
//!
//! The manifests use a small part of kustomize (resources, components, JSON 6902 patches
//! with `add`/`replace`, and whole-object merge patches), which [`render`] implements so the
//! test needs no kubectl; where `kubectl kustomize` is installed, its output must list the
//! same objects.

mod support;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::*;

const K8S: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s");

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The objects the kustomization in `dir` renders.
fn render(dir: &Path) -> Vec<Value> {
    let kustomization = &yaml_documents(&dir.join("kustomization.yaml"))[0];
    let mut objects = Vec::new();
    let list = |key: &str| -> Vec<String> {
        kustomization[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    for resource in list("resources") {
        let path = dir.join(&resource);
        if path.is_dir() {
            objects.extend(render(&path));
        } else {
            objects.extend(yaml_documents(&path));
        }
    }
    for component in list("components") {
        // A component's resources join, then its patches apply to everything so far.
        let component_dir = dir.join(component);
        let component = &yaml_documents(&component_dir.join("kustomization.yaml"))[0];
        for resource in component["resources"].as_array().into_iter().flatten() {
            let file = resource.as_str().expect("a resource path");
            objects.extend(yaml_documents(&component_dir.join(file)));
        }
        apply_patches(&component_dir, &mut objects);
    }
    apply_patches(dir, &mut objects);
    objects
}

fn apply_patches(dir: &Path, objects: &mut [Value]) {
    let kustomization = &yaml_documents(&dir.join("kustomization.yaml"))[0];
    for patch in kustomization["patches"].as_array().into_iter().flatten() {
        let target = &patch["target"];
        let object = objects
            .iter_mut()
            .find(|o| o["kind"] == target["kind"] && o["metadata"]["name"] == target["name"])
            .unwrap_or_else(|| panic!("no target for patch {patch}"));
        if let Some(file) = patch["path"].as_str() {
            // A whole-object merge patch: its top-level fields replace the object's.
            let merge = &yaml_documents(&dir.join(file))[0];
            for (key, value) in merge.as_object().expect("a patch object") {
                object[key.as_str()] = value.clone();
            }
            continue;
        }
        let operations: Vec<Value> =
            serde_yaml::from_str(patch["patch"].as_str().expect("an inline patch"))
                .expect("JSON 6902 operations");
        for operation in operations {
            json_patch(object, &operation);
        }
    }
}

/// Applies one JSON 6902 `add` or `replace`.
fn json_patch(object: &mut Value, operation: &Value) {
    let path = operation["path"].as_str().expect("a path");
    let mut parts: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let last = parts.pop().expect("a non-empty path");
    let mut parent = object;
    for part in &parts {
        parent = match parent {
            Value::Array(items) => &mut items[part.parse::<usize>().expect("an index")],
            other => &mut other[part.as_str()],
        };
    }
    let value = operation["value"].clone();
    match (operation["op"].as_str(), parent) {
        (Some("add"), Value::Array(items)) if last == "-" => items.push(value),
        (Some("add" | "replace"), Value::Array(items)) => {
            items[last.parse::<usize>().expect("an index")] = value
        }
        (Some("add" | "replace"), other) => other[last.as_str()] = value,
        (op, _) => panic!("unsupported patch operation {op:?}"),
    }
}

fn shape(name: &str) -> Vec<Value> {
    render(&PathBuf::from(K8S).join(name))
}

fn typed<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> T {
    let object = objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{kind} does not parse: {e}"))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    kinds.sort();
    kinds
}

/// The pod of the "restricted" Pod Security Standard: non-root, no privilege escalation,
/// every capability dropped, the runtime's seccomp profile, no host namespaces or paths.
fn assert_restricted(pod: &PodSpec) {
    let security = pod
        .security_context
        .as_ref()
        .expect("a pod security context");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert!(
        pod.volumes.iter().flatten().all(|v| v.host_path.is_none()),
        "no hostPath"
    );
    assert!(pod.init_containers.is_none(), "no init container");
    for container in &pod.containers {
        let c = container
            .security_context
            .as_ref()
            .expect("a container security context");
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_ne!(c.privileged, Some(true));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        let caps = c.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(caps.add.as_deref().unwrap_or_default().is_empty());
    }
}

/// The Cargo.toml version, the tag every manifest's image must carry.
fn image() -> String {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.split('"').next())
        .expect("package version");
    format!("ghcr.io/sluice-proxy/sluice:{version}")
}

#[test]
fn the_deployment_shape_is_restricted_and_least_privileged() {
    let objects = shape(".");
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole sluice",
            "ClusterRoleBinding sluice",
            "ConfigMap sluice-config",
            "Deployment sluice",
            "IngressClass sluice",
            "Namespace sluice",
            "PodDisruptionBudget sluice",
            "Role sluice-leader-election",
            "RoleBinding sluice-leader-election",
            "Service sluice",
            "ServiceAccount sluice",
        ]
    );
    let deployment: Deployment = typed(&objects, "Deployment");
    let spec = deployment.spec;
    let pod = spec.template.spec.expect("pod spec");
    assert_restricted(&pod);
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(image().as_str()));
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker/Dockerfile"))
            .expect("docker/Dockerfile");
    assert!(
        dockerfile.contains(&format!("-t {} .", image())),
        "the Dockerfile's build command tags {}",
        image()
    );
    let env: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"], "the Lease identity");
    assert!(
        spec.replicas.unwrap_or(1) >= 2,
        "a second replica to take the Lease over"
    );
    let service: Service = typed(&objects, "Service");
    assert_eq!(
        service.spec.and_then(|s| s.type_).as_deref(),
        Some("LoadBalancer")
    );

    let role: ClusterRole = typed(&objects, "ClusterRole");
    let mut grants: Vec<String> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|rule| {
            let groups = rule.api_groups.unwrap_or_default();
            let verbs = rule.verbs.join(",");
            rule.resources
                .unwrap_or_default()
                .into_iter()
                .map(move |r| format!("{}/{r}: {verbs}", groups.join(",")))
        })
        .collect();
    grants.sort();
    assert_eq!(
        grants,
        [
            "/configmaps: get,list,watch",
            "/namespaces: get,list,watch",
            "/secrets: get,list,watch",
            "/services: get,list,watch",
            "discovery.k8s.io/endpointslices: get,list,watch",
            "events.k8s.io/events: create,patch",
            "gateway.networking.k8s.io/backendtlspolicies/status: patch",
            "gateway.networking.k8s.io/backendtlspolicies: get,list,watch",
            "gateway.networking.k8s.io/gatewayclasses/status: patch",
            "gateway.networking.k8s.io/gatewayclasses: get,list,watch",
            "gateway.networking.k8s.io/gateways/status: patch",
            "gateway.networking.k8s.io/gateways: get,list,watch",
            "gateway.networking.k8s.io/grpcroutes/status: patch",
            "gateway.networking.k8s.io/grpcroutes: get,list,watch",
            "gateway.networking.k8s.io/httproutes/status: patch",
            "gateway.networking.k8s.io/httproutes: get,list,watch",
            "gateway.networking.k8s.io/listenersets/status: patch",
            "gateway.networking.k8s.io/listenersets: get,list,watch",
            "gateway.networking.k8s.io/referencegrants: get,list,watch",
            "gateway.networking.k8s.io/tcproutes/status: patch",
            "gateway.networking.k8s.io/tcproutes: get,list,watch",
            "gateway.networking.k8s.io/tlsroutes/status: patch",
            "gateway.networking.k8s.io/tlsroutes: get,list,watch",
            "networking.k8s.io/ingressclasses: get,list,watch",
            "networking.k8s.io/ingresses/status: patch",
            "networking.k8s.io/ingresses: get,list,watch",
        ]
    );
    let lease: Role = typed(&objects, "Role");
    assert_eq!(lease.metadata.namespace.as_deref(), Some("sluice"));
    for rule in lease.rules.unwrap_or_default() {
        assert_eq!(rule.resources.as_deref(), Some(&["leases".to_string()][..]));
    }
}

#[test]
fn the_daemonset_shape_hands_sockets_over_on_each_node() {
    let objects = shape("daemonset");
    let daemonset: DaemonSet = typed(&objects, "DaemonSet");
    let pod = daemonset.spec.template.spec.expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(image().as_str()));
    assert!(container.args.iter().flatten().any(|a| a == "--takeover"));
    assert!(
        container.ports.is_none(),
        "host ports would block the surge pod"
    );
    let upgrade = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "upgrade")
        .and_then(|v| v.host_path.as_ref())
        .expect("the hostPath of the upgrade socket");
    assert_eq!(upgrade.path, "/run/sluice");
    assert!(pod.termination_grace_period_seconds.unwrap_or(0) > 310);
    let namespace = objects
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .expect("namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
}

/// The sluice.yaml of the ConfigMap of `objects`, with the certificate paths pointed at
/// test certificates in `dir`.
fn embedded_config(objects: &[Value], dir: &ScratchDir) -> String {
    let config_map: ConfigMap = typed(objects, "ConfigMap");
    let yaml = config_map
        .data
        .and_then(|d| d.get("sluice.yaml").cloned())
        .expect("sluice.yaml in the ConfigMap");
    let certificate = support::tls::self_signed(dir, "default", &["default.test"]);
    let cert = certificate.cert_path.display().to_string();
    let key = certificate.key_path.display().to_string();
    yaml.replace("/etc/sluice/tls/tls.crt", &cert)
        .replace("/etc/sluice/tls/tls.key", &key)
        .replace("/etc/sluice/webhook/tls.crt", &cert)
        .replace("/etc/sluice/webhook/tls.key", &key)
}

#[test]
fn every_embedded_config_validates() {
    let dir = ScratchDir::new();
    for name in [".", "daemonset", "examples/with-webhook"] {
        let objects = shape(name);
        let yaml = embedded_config(&objects, &dir);
        let (output, _, _dir) = check_config(&yaml);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!stdout.contains("warning"), "{name}: {stdout}");
        assert!(
            yaml.contains("listen: 127.0.0.1:9901"),
            "{name}: admin on loopback"
        );
        assert!(yaml.contains("ingress:"), "{name}: serves Ingresses");
    }
    // The webhook component changes only the webhook listener of the Deployment's config.
    let plain = embedded_config(&shape("."), &dir);
    let with_webhook = embedded_config(&shape("examples/with-webhook"), &dir);
    let added: Vec<&str> = with_webhook
        .lines()
        .filter(|l| !plain.lines().any(|p| p == *l))
        .collect();
    assert_eq!(added.len(), 4, "{added:?}");
    assert!(added[0].trim() == "webhook:", "{added:?}");
}

#[test]
fn kubectl_kustomize_renders_the_same_objects() {
    let Ok(output) = std::process::Command::new("kubectl")
        .args(["kustomize", K8S])
        .output()
    else {
        println!("kubectl is not installed: the rendering above is the only check");
        return;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let rendered: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .collect();
    assert_eq!(kinds(&rendered), kinds(&shape(".")));
}
