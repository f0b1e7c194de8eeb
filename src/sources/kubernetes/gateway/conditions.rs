//! Status conditions as the Gateway API specification names them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition of `type_` saying `result`: `True` with `ok_reason`, or `False` with the
/// refusal's reason and message.
pub fn outcome(
    type_: &str,
    result: &Result<(), (&str, String)>,
    ok_reason: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    match result {
        Ok(()) => condition(type_, true, ok_reason, "", generation, now),
        Err((reason, message)) => condition(type_, false, reason, message.clone(), generation, now),
    }
}

/// A condition of `type_` with `reason`: `True` when `ok`.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}
