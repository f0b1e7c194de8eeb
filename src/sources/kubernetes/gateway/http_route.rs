//! HTTPRoute → routes: attachment to Gateway listeners (parentRefs with sectionName and
//! port, allowedRoutes, hostname intersection), matches, filters, weighted backends,
//! timeouts, and the route's status per parent.

use super::api::httproutes::*;
use super::attach::{
    attach, backend_ref, mirror_share, parent_refs, place, upstream, ParentRef, Refusal,
    RouteStatus, Verdict,
};
use super::listeners::{ResolvedListener, RouteKind};
use super::{created, fragment_key, origin, ObjectKey, RouteInputs, Translation};
use crate::model::{
    Backend, Conditions, Cors, Fragment, GatewaySettings, HeaderEdits, HeaderMatch, Mirror,
    OriginPattern, Overlap, PathMatch, PathRewrite, QueryMatch, Redirect, RedirectStatus,
    RetryPolicy, RouteConfig, ValueMatch, DEFAULT_MIRROR_IN_FLIGHT,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use regex::Regex;
use std::sync::Arc;
use std::time::Duration;

/// Translates one HTTPRoute: its fragment (if attached anywhere) and its status.
pub fn translate(
    key: &ObjectKey,
    route: &HttpRoute,
    inputs: &RouteInputs<'_>,
    resolved: &mut [ResolvedListener],
    settings: &GatewaySettings,
    now: &Time,
    out: &mut Translation,
) {
    let namespace = &key.0;
    let generation = route.metadata.generation;
    let hostnames: Vec<String> = route
        .spec
        .hostnames
        .iter()
        .flatten()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut fragment = Fragment::new(
        origin("HTTPRoute", &route.metadata),
        created(&route.metadata),
    );
    // The oldest route keeps a match several routes share, the first rule one several
    // rules share; the rest of this route is served either way.
    fragment.overlap = Overlap::Yielded;
    let rules = route.spec.rules.clone().unwrap_or_default();
    // The rules as routes without listener and hosts; problems make the route unaccepted
    // (UnsupportedValue) or its refs unresolved.
    let built = build_rules(key, &rules, inputs, &mut fragment);
    let parent_refs: Vec<ParentRef> = parent_refs!(route.spec.parent_refs);
    let verdict = Verdict {
        unsupported: built.unsupported.clone(),
        refs: built.refs.clone(),
    };
    let attachment = attach(
        RouteKind::Http,
        namespace,
        generation,
        &parent_refs,
        &hostnames,
        &verdict,
        resolved,
        inputs.objects,
        settings,
        now,
    );
    if attachment.parents.is_empty() {
        return;
    }
    attachment.present_client_certificate(&mut fragment);
    let targets = attachment.targets;
    out.http_routes.insert(
        key.clone(),
        Arc::new(RouteStatus {
            parents: attachment.parents,
        }),
    );
    if targets.is_empty() {
        return;
    }
    place(&built.routes, &targets, &mut fragment);
    out.fragments
        .insert(fragment_key("HTTPRoute", key), Arc::new(fragment));
}

/// The rules of a route as route templates.
struct BuiltRules {
    routes: Vec<RouteConfig>,
    /// A value sluice cannot serve: the route is not accepted.
    unsupported: Option<Refusal>,
    /// The backend references' verdict.
    refs: Result<(), Refusal>,
}

fn build_rules(
    key: &ObjectKey,
    rules: &[HttpRouteRules],
    inputs: &RouteInputs<'_>,
    fragment: &mut Fragment,
) -> BuiltRules {
    let mut built = BuiltRules {
        routes: Vec::new(),
        unsupported: None,
        refs: Ok(()),
    };
    for (i, rule) in rules.iter().enumerate() {
        let mut backends = Vec::new();
        let mut unresolved_weight = 0u32;
        for backend in rule.backend_refs.iter().flatten() {
            let mut request_headers = HeaderEdits::default();
            for filter in backend.filters.iter().flatten() {
                let edits = match &filter.r#type {
                    HttpRouteRulesBackendRefsFiltersType::RequestHeaderModifier => {
                        settings_of(&filter.request_header_modifier, "RequestHeaderModifier")
                            .and_then(|m| modifier_edits!(m))
                    }
                    other => Err((
                        "UnsupportedValue",
                        format!(
                            "filter {other:?} on backendRef {} is not supported",
                            backend.name
                        ),
                    )),
                };
                match edits {
                    Ok(edits) => request_headers = edits,
                    Err(refusal) => {
                        built.unsupported.get_or_insert(refusal);
                    }
                }
            }
            let weight = backend.weight.unwrap_or(1).max(0) as u32;
            let reference = backend_ref!(backend);
            match upstream(RouteKind::Http, key, &reference, inputs, fragment) {
                Ok(upstream) => backends.push(Backend {
                    upstream,
                    weight,
                    request_headers,
                }),
                Err(refusal) => {
                    unresolved_weight += weight;
                    if built.refs.is_ok() {
                        built.refs = Err(refusal);
                    }
                }
            }
        }
        let base = format!("HTTPRoute/{}/{}/{i}", key.0, key.1);
        let mut template = RouteConfig::new(&base, fragment.origin.clone(), "", "");
        template.backends = backends;
        template.unresolved_weight = unresolved_weight;
        if let Err(refusal) =
            apply_filters(key, rule, inputs, fragment, &mut template, &mut built.refs)
        {
            built.unsupported.get_or_insert(refusal);
            continue;
        }
        if let Some(timeouts) = &rule.timeouts {
            match (
                timeouts.request.as_deref().map(duration),
                timeouts.backend_request.as_deref().map(duration),
            ) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => {
                    built.unsupported.get_or_insert(("UnsupportedValue", e));
                    continue;
                }
                (request, backend) => {
                    if let Some(Ok(request)) = request {
                        template.timeouts.total = Some(request);
                    }
                    if let Some(Ok(Some(backend))) = backend {
                        template.timeouts.read = Some(backend);
                    }
                }
            }
        }
        if let Some(retry) = &rule.retry {
            match retry_policy(retry) {
                Ok(policy) => template.retry = Some(policy),
                Err(e) => {
                    built.unsupported.get_or_insert(("UnsupportedValue", e));
                    continue;
                }
            }
        }
        if rule.session_persistence.is_some() {
            built.unsupported.get_or_insert((
                "UnsupportedValue",
                format!("rule {i}: sessionPersistence is not supported"),
            ));
            continue;
        }
        let none_served = template.backends.is_empty() && template.filters.redirect.is_none();
        if none_served || template.unresolved_weight > 0 {
            // Every backend is invalid (or there is none): requests get 500; some are: their
            // share of the requests does.
            template.unresolved = Some(match &built.refs {
                Err((_, message)) => message.clone(),
                Ok(()) => "the rule has no backendRefs".into(),
            });
        }
        // No matches: every request (a prefix of `/`).
        let matches: Vec<Option<&HttpRouteRulesMatches>> = match rule.matches.as_deref() {
            None | Some([]) => vec![None],
            Some(list) => list.iter().map(Some).collect(),
        };
        for (j, m) in matches.into_iter().enumerate() {
            let mut route = template.clone();
            route.name = format!("{base}/{j}");
            match route_match(m) {
                Ok((path, conditions)) => {
                    route.paths = vec![path];
                    route.conditions = conditions;
                    built.routes.push(route);
                }
                Err(refusal) => {
                    built.unsupported.get_or_insert(refusal);
                }
            }
        }
    }
    built
}

/// A Gateway API duration (GEP-2257: `1h`, `10s`, `500ms`, combined); `0s`: no limit.
fn duration(text: &str) -> Result<Option<Duration>, String> {
    let parsed = humantime::parse_duration(text)
        .map_err(|e| format!("timeout {text:?} is not a duration: {e}"))?;
    Ok((!parsed.is_zero()).then_some(parsed))
}

/// A rule's `retry` as a retry policy: `attempts` counts retries (the model counts tries),
/// two tries when unset; the codes are retried for idempotent requests only, as resets are,
/// so that a POST is never sent twice.
fn retry_policy(retry: &HttpRouteRulesRetry) -> Result<RetryPolicy, String> {
    let mut policy = RetryPolicy::DEFAULT;
    if let Some(attempts) = retry.attempts {
        let retries = u32::try_from(attempts).map_err(|_| format!("retry attempts {attempts}"))?;
        policy.attempts = retries.saturating_add(1);
    }
    for code in retry.codes.iter().flatten() {
        let inserted = u16::try_from(*code).is_ok_and(|c| policy.on_status.insert(c));
        if !inserted {
            return Err(format!("retry code {code} is not from 400 to 599"));
        }
    }
    if let Some(backoff) = &retry.backoff {
        policy.backoff = humantime::parse_duration(backoff)
            .map_err(|e| format!("retry backoff {backoff:?} is not a duration: {e}"))?
            .into();
    }
    Ok(policy)
}

/// The path and conditions of one match.
fn route_match(m: Option<&HttpRouteRulesMatches>) -> Result<(PathMatch, Conditions), Refusal> {
    let unsupported = |what: String| ("UnsupportedValue", what);
    let Some(m) = m else {
        return Ok((PathMatch::SegmentPrefix("/".into()), Conditions::default()));
    };
    let path = m.path.as_ref();
    let value = path
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let path_type = path.and_then(|p| p.r#type.clone());
    let path = match path_type.unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix) {
        HttpRouteRulesMatchesPathType::Exact => PathMatch::Exact(value),
        HttpRouteRulesMatchesPathType::PathPrefix => PathMatch::SegmentPrefix(value),
        HttpRouteRulesMatchesPathType::RegularExpression => PathMatch::Regex(
            anchored(&value).map_err(|e| unsupported(format!("path regex {value:?}: {e}")))?,
        ),
    };
    let mut conditions = Conditions::default();
    for header in m.headers.iter().flatten() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| unsupported(format!("header name {:?}", header.name)))?;
        let value = match header.r#type {
            Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => ValueMatch::Regex(
                anchored(&header.value)
                    .map_err(|e| unsupported(format!("header regex {:?}: {e}", header.value)))?,
            ),
            _ => ValueMatch::Exact(header.value.clone()),
        };
        // The first match of a header name wins, as the specification says.
        if !conditions.headers.iter().any(|h| h.name == name) {
            conditions.headers.push(HeaderMatch { name, value });
        }
    }
    for query in m.query_params.iter().flatten() {
        let value = match query.r#type {
            Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => ValueMatch::Regex(
                anchored(&query.value)
                    .map_err(|e| unsupported(format!("query regex {:?}: {e}", query.value)))?,
            ),
            _ => ValueMatch::Exact(query.value.clone()),
        };
        if !conditions.query.iter().any(|q| q.name == query.name) {
            conditions.query.push(QueryMatch {
                name: query.name.clone(),
                value,
            });
        }
    }
    if let Some(method) = &m.method {
        let text = serde_json::to_value(method)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let method = http::Method::from_bytes(text.as_bytes())
            .map_err(|_| unsupported(format!("method {text:?}")))?;
        conditions.methods.push(method);
    }
    Ok((path, conditions))
}

pub(super) fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// The rule's filters on `route`.
fn apply_filters(
    key: &ObjectKey,
    rule: &HttpRouteRules,
    inputs: &RouteInputs<'_>,
    fragment: &mut Fragment,
    route: &mut RouteConfig,
    refs: &mut Result<(), Refusal>,
) -> Result<(), Refusal> {
    let unsupported = |what: String| ("UnsupportedValue", what);
    for filter in rule.filters.iter().flatten() {
        match filter.r#type {
            HttpRouteRulesFiltersType::RequestHeaderModifier => {
                let m = settings_of(&filter.request_header_modifier, "RequestHeaderModifier")?;
                route.filters.request_headers = modifier_edits!(m)?;
            }
            HttpRouteRulesFiltersType::ResponseHeaderModifier => {
                let m = settings_of(&filter.response_header_modifier, "ResponseHeaderModifier")?;
                route.filters.response_headers = modifier_edits!(m)?;
            }
            HttpRouteRulesFiltersType::RequestRedirect => {
                let r = settings_of(&filter.request_redirect, "RequestRedirect")?;
                let code = r.status_code.unwrap_or(302);
                let status = u16::try_from(code)
                    .ok()
                    .and_then(RedirectStatus::from_code)
                    .ok_or_else(|| unsupported(format!("redirect status {:?}", r.status_code)))?;
                let path = r.path.as_ref().map(|p| match p.r#type {
                    HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath => {
                        PathRewrite::Full(p.replace_full_path.clone().unwrap_or_default())
                    }
                    HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch => {
                        PathRewrite::Prefix(p.replace_prefix_match.clone().unwrap_or_default())
                    }
                });
                route.filters.redirect = Some(Redirect {
                    scheme: r
                        .scheme
                        .as_ref()
                        .and_then(|s| serde_json::to_value(s).ok()?.as_str().map(str::to_string)),
                    host: r.hostname.clone(),
                    port: r.port.and_then(|p| u16::try_from(p).ok()),
                    path,
                    status,
                });
            }
            HttpRouteRulesFiltersType::UrlRewrite => {
                let r = settings_of(&filter.url_rewrite, "URLRewrite")?;
                route.filters.rewrite.host = r.hostname.clone();
                route.filters.rewrite.path = r.path.as_ref().map(|p| match p.r#type {
                    HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath => {
                        PathRewrite::Full(p.replace_full_path.clone().unwrap_or_default())
                    }
                    HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch => {
                        PathRewrite::Prefix(p.replace_prefix_match.clone().unwrap_or_default())
                    }
                });
            }
            HttpRouteRulesFiltersType::RequestMirror => {
                let m = settings_of(&filter.request_mirror, "RequestMirror")?;
                let fraction = m.fraction.as_ref().map(|f| (f.numerator, f.denominator));
                let per_million = mirror_share(m.percent, fraction).map_err(unsupported)?;
                let reference = backend_ref!(m.backend_ref);
                // A mirror that cannot be resolved is an unresolved reference; requests
                // are served without it.
                match upstream(RouteKind::Http, key, &reference, inputs, fragment) {
                    Ok(upstream) => route.filters.mirrors.push(Mirror {
                        upstream,
                        max_in_flight: DEFAULT_MIRROR_IN_FLIGHT,
                        per_million,
                    }),
                    Err(refusal) => {
                        if refs.is_ok() {
                            *refs = Err(refusal);
                        }
                    }
                }
            }
            HttpRouteRulesFiltersType::Cors => {
                let c = settings_of(&filter.cors, "CORS")?;
                route.cors = Some(gateway_cors(c).map_err(unsupported)?);
            }
            HttpRouteRulesFiltersType::ExtensionRef | HttpRouteRulesFiltersType::ExternalAuth => {
                return Err(unsupported(format!(
                    "filter {:?} is not supported",
                    filter.r#type
                )));
            }
        }
    }
    Ok(())
}

/// The header edits of a header modifier filter (request or response), of whichever
/// route kind's generated type.
macro_rules! modifier_edits {
    ($modifier:expr) => {
        $crate::sources::kubernetes::gateway::http_route::header_edits(
            $modifier
                .set
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str())),
            $modifier
                .add
                .iter()
                .flatten()
                .map(|h| (h.name.as_str(), h.value.as_str())),
            $modifier.remove.iter().flatten(),
        )
    };
}
pub(super) use modifier_edits;

/// A CORS filter as the model's: the specification's defaults (no credentials, preflights
/// kept 5 s), not ingress-nginx's; `*` alone in the methods or headers is any.
fn gateway_cors(c: &HttpRouteRulesFiltersCors) -> Result<Cors, String> {
    let allow_origins = c
        .allow_origins
        .iter()
        .flatten()
        .map(|o| OriginPattern::parse(o).ok_or_else(|| format!("CORS origin {o:?}")))
        .collect::<Result<_, _>>()?;
    let allow_methods = c
        .allow_methods
        .iter()
        .flatten()
        .map(|m| http::Method::from_bytes(m.as_bytes()).map_err(|_| format!("CORS method {m:?}")))
        .collect::<Result<_, _>>()?;
    let names = |list: &Option<Vec<String>>| {
        list.iter()
            .flatten()
            .map(|h| {
                http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("CORS header {h:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let max_age = c.max_age.unwrap_or(5).max(1);
    Ok(Cors {
        allow_origins,
        allow_methods,
        allow_headers: names(&c.allow_headers)?,
        expose_headers: names(&c.expose_headers)?,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        max_age: Some(Duration::from_secs(max_age.unsigned_abs().into())),
    })
}

/// A filter's settings, which its type requires.
pub(super) fn settings_of<'a, T>(settings: &'a Option<T>, filter: &str) -> Result<&'a T, Refusal> {
    settings.as_ref().ok_or_else(|| {
        (
            "UnsupportedValue",
            format!("filter {filter} without its settings"),
        )
    })
}

/// Header edits from a header modifier's lists.
pub(super) fn header_edits<'a>(
    set: impl Iterator<Item = (&'a str, &'a str)>,
    add: impl Iterator<Item = (&'a str, &'a str)>,
    remove: impl Iterator<Item = &'a String>,
) -> Result<HeaderEdits, Refusal> {
    let pair = |(name, value): (&str, &str)| {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ("UnsupportedValue", format!("header name {name:?}")))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| ("UnsupportedValue", format!("header value {value:?}")))?;
        Ok::<_, Refusal>((name, value))
    };
    Ok(HeaderEdits {
        set: set.map(pair).collect::<Result<_, _>>()?,
        add: add.map(pair).collect::<Result<_, _>>()?,
        remove: remove
            .map(|name| {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ("UnsupportedValue", format!("header name {name:?}")))
            })
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RetryMethods;

    fn retry(attempts: Option<i64>, codes: &[i64], backoff: Option<&str>) -> HttpRouteRulesRetry {
        HttpRouteRulesRetry {
            attempts,
            backoff: backoff.map(str::to_string),
            codes: Some(codes.to_vec()),
        }
    }

    #[test]
    fn retry_attempts_count_retries_and_codes_become_statuses() {
        let policy = retry_policy(&retry(Some(3), &[500, 503], Some("100ms"))).expect("valid");
        assert_eq!(policy.attempts, 4);
        assert_eq!(policy.on_status.iter().collect::<Vec<_>>(), [500, 503]);
        assert_eq!(policy.backoff, Some(Duration::from_millis(100)));
        assert_eq!(policy.methods, RetryMethods::Idempotent);
        let unset = retry_policy(&retry(None, &[], None)).expect("valid");
        assert_eq!(unset.attempts, RetryPolicy::DEFAULT.attempts);
        assert!(unset.on_status.is_empty());
    }

    #[test]
    fn retry_codes_outside_400_to_599_and_bad_backoffs_are_refused() {
        assert!(retry_policy(&retry(None, &[302], None)).is_err());
        assert!(retry_policy(&retry(None, &[70_000], None)).is_err());
        assert!(retry_policy(&retry(Some(-1), &[], None)).is_err());
        assert!(retry_policy(&retry(None, &[], Some("soon"))).is_err());
    }
}
