//! The manifests in k8s/ parse as Kubernetes objects, grant only what discovery needs, and
//! embed a sluice config that validates.

mod support;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use support::*;

fn documents() -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/sluice.yaml"))
        .expect("read k8s/sluice.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("YAML document"))
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = documents()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in k8s/sluice.yaml"));
    serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{kind} does not parse: {e}"))
}

#[test]
fn every_document_is_a_valid_kubernetes_object() {
    let kinds: Vec<String> = documents()
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    let _: Namespace = typed("Namespace");
    let _: ServiceAccount = typed("ServiceAccount");
    let _: ClusterRoleBinding = typed("ClusterRoleBinding");

    let role: ClusterRole = typed("ClusterRole");
    for rule in role.rules.unwrap_or_default() {
        assert_eq!(rule.resources.unwrap_or_default(), ["endpointslices"]);
        assert_eq!(rule.verbs, ["get", "list", "watch"], "read-only access");
    }

    let daemonset: DaemonSet = typed("DaemonSet");
    let pod = daemonset.spec.template.spec.expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    let container = &pod.containers[0];
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert!(container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .is_some());
    assert!(
        pod.termination_grace_period_seconds.unwrap_or(0) > 310,
        "above server.drain_delay + grace_period"
    );
    // Rollouts hand the sockets over on each node: surge, takeover, a shared socket dir.
    let rolling = daemonset
        .spec
        .update_strategy
        .and_then(|s| s.rolling_update)
        .expect("rolling update");
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert!(container.args.iter().flatten().any(|a| a == "--takeover"));
    assert!(
        container.ports.is_none(),
        "declared ports are host ports under hostNetwork and block the surge pod"
    );
    let upgrade_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "upgrade")
        .and_then(|v| v.host_path.as_ref())
        .expect("hostPath volume for the upgrade socket");
    assert_eq!(upgrade_volume.path, "/run/sluice");
    assert!(container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == "upgrade" && m.mount_path == "/run/sluice"));
}

#[test]
fn embedded_config_validates() {
    let config_map: ConfigMap = typed("ConfigMap");
    let yaml = config_map
        .data
        .and_then(|d| d.get("sluice.yaml").cloned())
        .expect("sluice.yaml in the ConfigMap");
    assert!(yaml.contains("grace_period: 300s"));
    assert!(yaml.contains("upgrade_sock: /run/sluice/upgrade.sock"));
    let (output, _, _dir) = check_config(&yaml);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // hostNetwork: the admin listener must not be on the node's addresses.
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(yaml.contains("listen: 127.0.0.1:9901"), "{yaml}");
}
