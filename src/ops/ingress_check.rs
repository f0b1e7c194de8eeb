//! `sluice ingress check`: the migration report. Reads Ingresses (and the IngressClasses,
//! Services and Secrets beside them) from a file (`kubectl get ingress,svc -A -o yaml`) or
//! from the cluster, and says per object what sluice will serve, each annotation's
//! outcome, and where sluice differs from ingress-nginx. Objects are checked against each
//! other with the compiler, so conflicts show too.

use crate::compile::Compiler;
use crate::model::{IngressSettings, KubernetesClient, ListenerConfig, ListenerProtocol};
use crate::sources::kubernetes::ingress::{
    class, key_of, translate, ObjectSet, Reason, References, Report,
};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::Deserialize;
use std::path::Path;

/// What the check reads: every Ingress in input order, and the objects beside them.
#[derive(Debug, Default)]
pub struct CheckInput {
    pub ingresses: Vec<Ingress>,
    pub objects: ObjectSet,
    /// Where the objects came from, for the summary.
    pub from: String,
}

impl CheckInput {
    fn add(&mut self, value: serde_json::Value, at: &str) -> Result<(), String> {
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let parse_error = |e: serde_json::Error| format!("{at}: a {kind} that cannot be read: {e}");
        match kind.as_str() {
            "List" | "IngressList" | "ServiceList" | "SecretList" | "IngressClassList" => {
                let items = value["items"].as_array().cloned().unwrap_or_default();
                for (i, item) in items.into_iter().enumerate() {
                    let mut item = item;
                    if item["kind"].is_null() {
                        item["kind"] = kind.trim_end_matches("List").into();
                    }
                    self.add(item, &format!("{at} items[{i}]"))?;
                }
            }
            "Ingress" => self
                .ingresses
                .push(serde_json::from_value(value).map_err(parse_error)?),
            "IngressClass" => {
                let class: IngressClass = serde_json::from_value(value).map_err(parse_error)?;
                let name = class.metadata.name.clone().unwrap_or_default();
                self.objects.classes.insert(name, class);
            }
            "Service" => {
                let service: Service = serde_json::from_value(value).map_err(parse_error)?;
                self.objects
                    .services
                    .insert(key_of(&service.metadata), service);
            }
            "Secret" => {
                let secret: Secret = serde_json::from_value(value).map_err(parse_error)?;
                self.objects
                    .secrets
                    .insert(key_of(&secret.metadata), secret);
            }
            _ => {}
        }
        Ok(())
    }

    /// The objects of a YAML or JSON file, one or many documents, `List`s included.
    pub fn read_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut input = CheckInput {
            from: path.display().to_string(),
            ..Default::default()
        };
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_json::Value::deserialize(document)
                .map_err(|e| format!("{}: document {}: {e}", path.display(), i + 1))?;
            if value.is_null() {
                continue;
            }
            input.add(value, &format!("{} document {}", path.display(), i + 1))?;
        }
        for ingress in &input.ingresses {
            input
                .objects
                .ingresses
                .insert(key_of(&ingress.metadata), ingress.clone());
        }
        Ok(input)
    }

    /// The Ingresses, IngressClasses and Services of the cluster, and the Secrets the
    /// Ingresses reference.
    pub async fn read_cluster(client: Option<&KubernetesClient>) -> Result<Self, String> {
        use kube::api::{Api, ListParams};
        let client = crate::services::discovery::make_client(client).await?;
        let list = ListParams::default();
        fn what(kind: &'static str) -> impl Fn(kube::Error) -> String {
            move |e| format!("listing {kind}: {e}")
        }
        let mut input = CheckInput {
            from: "the cluster".into(),
            ..Default::default()
        };
        for class in Api::<IngressClass>::all(client.clone())
            .list(&list)
            .await
            .map_err(what("IngressClasses"))?
        {
            let name = class.metadata.name.clone().unwrap_or_default();
            input.objects.classes.insert(name, class);
        }
        for service in Api::<Service>::all(client.clone())
            .list(&list)
            .await
            .map_err(what("Services"))?
        {
            input
                .objects
                .services
                .insert(key_of(&service.metadata), service);
        }
        input.ingresses = Api::<Ingress>::all(client.clone())
            .list(&list)
            .await
            .map_err(what("Ingresses"))?
            .items;
        for ingress in &input.ingresses {
            let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
            input
                .objects
                .ingresses
                .insert(key_of(&ingress.metadata), ingress.clone());
            let api = Api::<Secret>::namespaced(client.clone(), &namespace);
            for name in crate::services::ingress::referenced_secrets(ingress) {
                let secret = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| format!("reading Secret {namespace}/{name}: {e}"))?;
                if let Some(secret) = secret {
                    input
                        .objects
                        .secrets
                        .insert(key_of(&secret.metadata), secret);
                }
            }
        }
        Ok(input)
    }
}

/// The settings a check uses when there is no config file: sluice's defaults, with
/// listeners named `http` and `https`, `ssl-passthrough` on a listener named `tls`, claiming
/// ingress-nginx's class `nginx` too (the migration's side-by-side setting).
pub fn default_settings() -> IngressSettings {
    IngressSettings {
        also_claim: vec!["nginx".into()],
        passthrough_listener: Some("tls".into()),
        ..IngressSettings::new("http", Some("https"))
    }
}

/// The listeners of `settings`, for the conflict check, modelled on `http` (a plain
/// listener) when no config file gives them.
pub fn listeners_for(settings: &IngressSettings, http: &ListenerConfig) -> Vec<ListenerConfig> {
    let mut plain = http.clone();
    plain.name = settings.http_listener.clone();
    let mut listeners = vec![plain];
    if let Some(name) = &settings.https_listener {
        let mut tls = http.clone();
        tls.name = name.clone();
        tls.tls = true;
        listeners.push(tls);
    }
    if let Some(name) = &settings.passthrough_listener {
        let mut passthrough = http.clone();
        passthrough.name = name.clone();
        passthrough.protocol = ListenerProtocol::Tcp;
        passthrough.sni_routing = true;
        listeners.push(passthrough);
    }
    listeners
}

/// A plain http listener with sluice's defaults, to model the listeners on when there is
/// no config file.
pub fn default_listener() -> Result<ListenerConfig, String> {
    let text = "listeners: [{ name: http, listen: \"127.0.0.1:80\" }]\n";
    crate::sources::file::parse(Path::new("(defaults)"), text)
        .map(|file| file.settings.listeners[0].clone())
        .map_err(|e| e.to_string())
}

/// The result of a check.
pub struct CheckOutcome {
    /// One per Ingress, in input order.
    pub reports: Vec<Report>,
    /// The fragments of the objects that are not rejected, in input order.
    pub accepted: Vec<crate::model::Fragment>,
    /// The printed report.
    pub text: String,
    /// Whether anything is rejected or not supported.
    pub failed: bool,
}

/// Checks every Ingress of `input`.
pub fn check(
    input: &CheckInput,
    settings: &IngressSettings,
    listeners: &[ListenerConfig],
) -> CheckOutcome {
    let references = if input.from == "the cluster" {
        References::Strict
    } else {
        References::Assumed
    };
    let classes: Vec<IngressClass> = input.objects.classes.values().cloned().collect();
    let claimed: Vec<Option<String>> = input
        .ingresses
        .iter()
        .map(|ingress| class::claimed_by(ingress, &classes, settings))
        .collect();
    // As the controller sees them: canaries are found among the claimed Ingresses only.
    let mut objects = input.objects.clone();
    objects
        .ingresses
        .retain(|_, ingress| class::claimed_by(ingress, &classes, settings).is_some());
    let mut translations: Vec<_> = input
        .ingresses
        .iter()
        .map(|ingress| translate(ingress, &objects, settings, references))
        .collect();
    // The conflict check: accepted objects in precedence order, as the controller's
    // compiler takes them.
    let mut order: Vec<usize> = (0..translations.len()).collect();
    order.sort_by_cached_key(|&i| translations[i].fragment.precedence());
    // What annotations become is checked, not the deployment's `redis:`: a global rate
    // limit is reported as mapped.
    let mut compiler = Compiler::new(listeners).with_redis(true);
    for i in order {
        if translations[i].report.rejected() || claimed[i].is_none() {
            continue;
        }
        if let Err(problems) = compiler.admit(&translations[i].fragment) {
            for problem in problems {
                let message = match problem.key_path().as_str() {
                    "" => problem.message,
                    field => format!("{field}: {}", problem.message),
                };
                translations[i].report.error(Reason::Conflict, message);
            }
        }
    }
    let mut text = String::new();
    let (mut served, mut partly, mut rejected, mut unclaimed) = (0, 0, 0, 0);
    for (claim, translation) in claimed.iter().zip(&translations) {
        let report = &translation.report;
        text.push_str(&report.to_string());
        match claim {
            Some(why) => text.push_str(&format!("  claimed by sluice: {why}\n")),
            None => {
                unclaimed += 1;
                text.push_str(
                    "  not claimed with these settings (name its class in ingress.also_claim \
                     to serve it beside ingress-nginx, or move it to sluice's class)\n",
                );
            }
        }
        text.push('\n');
        if report.rejected() {
            rejected += 1;
        } else if !report.unsupported().is_empty() {
            partly += 1;
        } else {
            served += 1;
        }
    }
    text.push_str(&format!(
        "{} Ingresses from {}: {served} served as written, {partly} served without \
         annotations sluice does not support, {rejected} rejected; {unclaimed} not claimed \
         with these settings\n",
        input.ingresses.len(),
        input.from
    ));
    let failed = translations.iter().any(|t| t.report.fails_check());
    let accepted = translations
        .iter()
        .zip(&claimed)
        .filter(|(t, claim)| !t.report.rejected() && claim.is_some())
        .map(|(t, _)| t.fragment.clone())
        .collect();
    CheckOutcome {
        accepted,
        reports: translations.into_iter().map(|t| t.report).collect(),
        text,
        failed,
    }
}
