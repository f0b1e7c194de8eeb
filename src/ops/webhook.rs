//! The validating admission webhook for Ingresses: the API server sends each create or
//! update of an Ingress (an `AdmissionReview`), and the answer denies what the controller
//! would reject, with the same message. The check is the controller's: the translation
//! against the objects the controller sees, then the compiler against the running config
//! (conflicts), with no side effect. Served over HTTPS on `ingress.webhook.listen`.

use super::admin::json_response;
use crate::services::ingress::{IngressView, SOURCE};
use crate::sources::kubernetes::ingress::{class, translate, Reason, References};
use crate::state::State;
use async_trait::async_trait;
use k8s_openapi::api::networking::v1::Ingress;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;

/// The largest AdmissionReview read (the API server's own object limit is 3 MiB).
const MAX_REVIEW: usize = 4 << 20;

/// The webhook app.
pub struct AdmissionWebhook {
    state: Arc<State>,
    view: Arc<IngressView>,
}

impl AdmissionWebhook {
    pub fn new(state: Arc<State>, view: Arc<IngressView>) -> Self {
        Self { state, view }
    }
}

/// The answer to one AdmissionReview: allowed, or denied with the message; warnings for
/// annotations served without effect.
pub fn review(state: &State, view: &IngressView, request: &Value) -> Value {
    let uid = request["request"]["uid"].clone();
    let answer = |allowed: bool, message: Option<String>, warnings: Vec<String>| {
        let mut response = json!({ "uid": uid, "allowed": allowed });
        if let Some(message) = message {
            response["status"] = json!({ "code": 400, "reason": "Invalid", "message": message });
        }
        if !warnings.is_empty() {
            response["warnings"] = json!(warnings);
        }
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        })
    };
    let object = &request["request"]["object"];
    if request["request"]["operation"] == "DELETE" || object.is_null() {
        return answer(true, None, Vec::new());
    }
    let ingress: Ingress = match serde_json::from_value(object.clone()) {
        Ok(ingress) => ingress,
        Err(e) => return answer(false, Some(format!("not an Ingress: {e}")), Vec::new()),
    };
    if !view.is_synced() {
        let warning = "sluice has not synced with the API yet; this Ingress was not checked";
        return answer(true, None, vec![warning.into()]);
    }
    let objects = view.objects.load();
    let classes: Vec<_> = objects.classes.values().cloned().collect();
    if class::claimed_by(&ingress, &classes, &view.settings).is_none() {
        return answer(true, None, Vec::new());
    }
    let translation = translate(
        &ingress,
        objects.as_ref(),
        &view.settings,
        References::Strict,
    );
    let report = &translation.report;
    let mut warnings = report.warnings.clone();
    warnings.extend(
        report
            .unsupported()
            .iter()
            .map(|a| format!("annotation {a} is not supported by sluice and has no effect")),
    );
    // A Service or Secret created together with the Ingress may not have reached the
    // controller's watches yet (and Secrets nothing references yet are not watched at all):
    // not a reason to refuse. The controller reports it if it stays missing.
    let missing = |reason: Reason| matches!(reason, Reason::MissingService | Reason::MissingSecret);
    if report.errors.iter().all(|(reason, _)| missing(*reason)) {
        warnings.extend(report.errors.iter().map(|(_, message)| {
            format!("{message} (not checked: it may be created with this Ingress)")
        }));
    } else {
        return answer(false, Some(report.error_message()), warnings);
    }
    let key = format!(
        "{}/{}",
        ingress.metadata.namespace.as_deref().unwrap_or_default(),
        ingress.metadata.name.as_deref().unwrap_or_default()
    );
    let mut fragment = translation.fragment;
    // An object being created has no creation time yet: it is the youngest claim.
    fragment.created.get_or_insert(i64::MAX);
    match state.check_fragment(SOURCE, &key, fragment) {
        Some(rejected) => {
            let problems: Vec<String> = rejected
                .problems
                .iter()
                .map(|p| match p.key_path().as_str() {
                    "" => p.message.clone(),
                    field => format!("{field}: {}", p.message),
                })
                .collect();
            answer(false, Some(problems.join("; ")), warnings)
        }
        None => answer(true, None, warnings),
    }
}

#[async_trait]
impl ServeHttp for AdmissionWebhook {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        if session.req_header().method != http::Method::POST {
            return json_response(405, &json!({ "error": "POST an AdmissionReview" }));
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_REVIEW {
                        return json_response(413, &json!({ "error": "review too large" }));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return json_response(
                        400,
                        &json!({ "error": format!("reading the body: {e}") }),
                    )
                }
            }
        }
        let request: Value = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return json_response(400, &json!({ "error": format!("not JSON: {e}") }));
            }
        };
        let state = self.state.clone();
        let view = self.view.clone();
        // Translation and compilation are CPU work: off the async thread.
        match tokio::task::spawn_blocking(move || review(&state, &view, &request)).await {
            Ok(answer) => json_response(200, &answer),
            Err(e) => json_response(500, &json!({ "error": format!("review failed: {e}") })),
        }
    }
}
