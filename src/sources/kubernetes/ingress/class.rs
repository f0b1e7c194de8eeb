//! Which Ingresses are sluice's: by `spec.ingressClassName` naming an IngressClass of
//! sluice's controller, by the legacy `kubernetes.io/ingress.class` annotation, or, for an
//! Ingress naming no class, when sluice's class is the default (or `unclassed` says so).

use crate::model::IngressSettings;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The legacy class annotation.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The annotation that makes an IngressClass the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Why an Ingress is sluice's, or `None`.
pub fn claimed_by(
    ingress: &Ingress,
    classes: &[IngressClass],
    settings: &IngressSettings,
) -> Option<String> {
    let ours = |class: &IngressClass| {
        let name = class.metadata.name.as_deref().unwrap_or_default();
        let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
        controller == Some(settings.controller.as_str())
            || settings.also_claim.iter().any(|c| c == name)
    };
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    if let Some(name) = named {
        let class = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name));
        return match class {
            Some(class) if ours(class) => Some(format!("spec.ingressClassName {name}")),
            // The migration option claims a class name even before its IngressClass exists.
            None if settings.also_claim.iter().any(|c| c == name) => {
                Some(format!("spec.ingressClassName {name} (also_claim)"))
            }
            _ => None,
        };
    }
    let legacy = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION));
    if let Some(class) = legacy {
        let ours = *class == settings.class || settings.also_claim.contains(class);
        return ours.then(|| format!("annotation {CLASS_ANNOTATION}: {class}"));
    }
    if settings.unclassed {
        return Some("no class (ingress.unclassed)".into());
    }
    let default = classes.iter().find(|class| {
        let is_default = class
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v == "true");
        is_default && ours(class)
    })?;
    Some(format!(
        "no class; {} is the default IngressClass",
        default.metadata.name.as_deref().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DEFAULT_CONTROLLER, NGINX_CONTROLLER};
    use k8s_openapi::api::networking::v1::{IngressClassSpec, IngressSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn settings() -> IngressSettings {
        IngressSettings::new("http", None)
    }

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        IngressClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: default
                    .then(|| [(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some(controller.into()),
                ..Default::default()
            }),
        }
    }

    fn ingress(class_name: Option<&str>, annotation: Option<&str>) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                annotations: annotation
                    .map(|a| [(CLASS_ANNOTATION.to_string(), a.to_string())].into()),
                ..Default::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: class_name.map(str::to_string),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn class_selection() {
        let classes = [
            class("sluice", DEFAULT_CONTROLLER, false),
            class("nginx", NGINX_CONTROLLER, true),
        ];
        let s = settings();
        let claimed = |i: &Ingress, s: &IngressSettings| claimed_by(i, &classes, s).is_some();
        assert!(claimed(&ingress(Some("sluice"), None), &s));
        assert!(!claimed(&ingress(Some("nginx"), None), &s));
        assert!(!claimed(&ingress(Some("missing"), None), &s));
        assert!(claimed(&ingress(None, Some("sluice")), &s));
        assert!(!claimed(&ingress(None, Some("nginx")), &s));
        // The class name wins over the legacy annotation.
        assert!(!claimed(&ingress(Some("nginx"), Some("sluice")), &s));
        // No class: nginx's class is the default, not sluice's.
        assert!(!claimed(&ingress(None, None), &s));
        let unclassed = IngressSettings {
            unclassed: true,
            ..settings()
        };
        assert!(claimed(&ingress(None, None), &unclassed));
        let migrating = IngressSettings {
            also_claim: vec!["nginx".into()],
            ..settings()
        };
        assert!(claimed(&ingress(Some("nginx"), None), &migrating));
        assert!(claimed(&ingress(None, Some("nginx")), &migrating));
        assert!(claimed(&ingress(None, None), &migrating));
        let default_ours = [class("sluice", DEFAULT_CONTROLLER, true)];
        assert!(claimed_by(&ingress(None, None), &default_ours, &s).is_some());
    }
}
