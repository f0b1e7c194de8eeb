//! GRPCRoute → routes on the Gateway's HTTP and HTTPS listeners: a gRPC method is the
//! request path `/SERVICE/METHOD`, so method matches become path matches (exact, or a
//! regular expression when only the method or a pattern is given) and header matches are
//! HTTP header matches. Backends are spoken to in HTTP/2 (h2c), as gRPC requires.

use super::api::grpcroutes::*;
use super::attach::{
    attach, backend_ref, mirror_share, parent_refs, place, upstream, ParentRef, Refusal,
    RouteStatus, Verdict,
};
use super::http_route::{anchored, modifier_edits, settings_of};
use super::listeners::{ResolvedListener, RouteKind};
use super::{created, fragment_key, origin, ObjectKey, RouteInputs, Translation};
use crate::model::{
    Backend, Conditions, Fragment, GatewaySettings, HeaderMatch, Mirror, Overlap, PathMatch,
    RouteConfig, ValueMatch, DEFAULT_MIRROR_IN_FLIGHT,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::sync::Arc;

/// Translates one GRPCRoute: its fragment (if attached anywhere) and its status.
pub fn translate(
    key: &ObjectKey,
    route: &GrpcRoute,
    inputs: &RouteInputs<'_>,
    resolved: &mut [ResolvedListener],
    settings: &GatewaySettings,
    now: &Time,
    out: &mut Translation,
) {
    let hostnames: Vec<String> = route
        .spec
        .hostnames
        .iter()
        .flatten()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut fragment = Fragment::new(
        origin("GRPCRoute", &route.metadata),
        created(&route.metadata),
    );
    // The oldest route keeps a match several routes share, the first rule one several
    // rules share; the rest of this route is served either way.
    fragment.overlap = Overlap::Yielded;
    let rules = route.spec.rules.as_deref().unwrap_or_default();
    let (templates, verdict) = build_rules(key, rules, inputs, &mut fragment);
    let parent_refs: Vec<ParentRef> = parent_refs!(route.spec.parent_refs);
    let attachment = attach(
        RouteKind::Grpc,
        &key.0,
        route.metadata.generation,
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
    out.grpc_routes.insert(
        key.clone(),
        Arc::new(RouteStatus {
            parents: attachment.parents,
        }),
    );
    if targets.is_empty() {
        return;
    }
    place(&templates, &targets, &mut fragment);
    out.fragments
        .insert(fragment_key("GRPCRoute", key), Arc::new(fragment));
}

/// The rules as route templates (no listener, no hosts), and the route's verdict.
fn build_rules(
    key: &ObjectKey,
    rules: &[GrpcRouteRules],
    inputs: &RouteInputs<'_>,
    fragment: &mut Fragment,
) -> (Vec<RouteConfig>, Verdict) {
    let mut verdict = Verdict {
        unsupported: None,
        refs: Ok(()),
    };
    let mut routes = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let mut backends = Vec::new();
        let mut unresolved_weight = 0u32;
        for backend in rule.backend_refs.iter().flatten() {
            if backend.filters.as_ref().is_some_and(|f| !f.is_empty()) {
                verdict.unsupported.get_or_insert((
                    "UnsupportedValue",
                    format!("filters on backendRef {} are not supported", backend.name),
                ));
            }
            let reference = backend_ref!(backend);
            let weight = backend.weight.unwrap_or(1).max(0) as u32;
            match upstream(RouteKind::Grpc, key, &reference, inputs, fragment) {
                Ok(upstream) => backends.push(Backend::new(upstream, weight)),
                Err(refusal) => {
                    unresolved_weight += weight;
                    if verdict.refs.is_ok() {
                        verdict.refs = Err(refusal);
                    }
                }
            }
        }
        let base = format!("GRPCRoute/{}/{}/{i}", key.0, key.1);
        let mut template = RouteConfig::new(&base, fragment.origin.clone(), "", "");
        template.backends = backends;
        template.unresolved_weight = unresolved_weight;
        if let Err(refusal) = apply_filters(
            key,
            rule,
            inputs,
            fragment,
            &mut template,
            &mut verdict.refs,
        ) {
            verdict.unsupported.get_or_insert(refusal);
            continue;
        }
        if template.backends.is_empty() || template.unresolved_weight > 0 {
            template.unresolved = Some(match &verdict.refs {
                Err((_, message)) => message.clone(),
                Ok(()) => "the rule has no backendRefs".into(),
            });
        }
        let matches: Vec<Option<&GrpcRouteRulesMatches>> = match rule.matches.as_deref() {
            None | Some([]) => vec![None],
            Some(list) => list.iter().map(Some).collect(),
        };
        for (j, m) in matches.into_iter().enumerate() {
            match route_match(m) {
                Ok((path, conditions)) => {
                    let mut route = template.clone();
                    route.name = format!("{base}/{j}");
                    route.paths = vec![path];
                    route.conditions = conditions;
                    routes.push(route);
                }
                Err(refusal) => {
                    verdict.unsupported.get_or_insert(refusal);
                }
            }
        }
    }
    (routes, verdict)
}

/// The path and conditions of one match: the method as the request path, the headers as
/// header matches.
fn route_match(m: Option<&GrpcRouteRulesMatches>) -> Result<(PathMatch, Conditions), Refusal> {
    let unsupported = |what: String| ("UnsupportedValue", what);
    let mut conditions = Conditions::default();
    let Some(m) = m else {
        return Ok((PathMatch::SegmentPrefix("/".into()), conditions));
    };
    let path = match &m.method {
        None => PathMatch::SegmentPrefix("/".into()),
        Some(method) => method_path(method).map_err(unsupported)?,
    };
    for header in m.headers.iter().flatten() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| unsupported(format!("header name {:?}", header.name)))?;
        let value = match header.r#type {
            Some(GrpcRouteRulesMatchesHeadersType::RegularExpression) => ValueMatch::Regex(
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
    Ok((path, conditions))
}

/// The request path a method match selects.
fn method_path(method: &GrpcRouteRulesMatchesMethod) -> Result<PathMatch, String> {
    let service = method.service.as_deref().filter(|s| !s.is_empty());
    let name = method.method.as_deref().filter(|m| !m.is_empty());
    let regex = |service: &str, name: &str| {
        anchored(&format!("/{service}/{name}"))
            .map(PathMatch::Regex)
            .map_err(|e| format!("method pattern /{service}/{name}: {e}"))
    };
    match method.r#type {
        Some(GrpcRouteRulesMatchesMethodType::RegularExpression) => {
            regex(service.unwrap_or("[^/]+"), name.unwrap_or("[^/]+"))
        }
        _ => match (service, name) {
            (Some(service), Some(name)) => Ok(PathMatch::Exact(format!("/{service}/{name}"))),
            (Some(service), None) => Ok(PathMatch::SegmentPrefix(format!("/{service}"))),
            (None, Some(name)) => regex("[^/]+", &regex::escape(name)),
            (None, None) => Err("a method match names a service or a method".into()),
        },
    }
}

/// The rule's filters on `route`.
fn apply_filters(
    key: &ObjectKey,
    rule: &GrpcRouteRules,
    inputs: &RouteInputs<'_>,
    fragment: &mut Fragment,
    route: &mut RouteConfig,
    refs: &mut Result<(), Refusal>,
) -> Result<(), Refusal> {
    for filter in rule.filters.iter().flatten() {
        match filter.r#type {
            GrpcRouteRulesFiltersType::RequestHeaderModifier => {
                let m = settings_of(&filter.request_header_modifier, "RequestHeaderModifier")?;
                route.filters.request_headers = modifier_edits!(m)?;
            }
            GrpcRouteRulesFiltersType::ResponseHeaderModifier => {
                let m = settings_of(&filter.response_header_modifier, "ResponseHeaderModifier")?;
                route.filters.response_headers = modifier_edits!(m)?;
            }
            GrpcRouteRulesFiltersType::RequestMirror => {
                let m = settings_of(&filter.request_mirror, "RequestMirror")?;
                let fraction = m.fraction.as_ref().map(|f| (f.numerator, f.denominator));
                let per_million =
                    mirror_share(m.percent, fraction).map_err(|e| ("UnsupportedValue", e))?;
                let reference = backend_ref!(m.backend_ref);
                match upstream(RouteKind::Grpc, key, &reference, inputs, fragment) {
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
            GrpcRouteRulesFiltersType::ExtensionRef => {
                return Err((
                    "UnsupportedValue",
                    "filter ExtensionRef is not supported".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(
        service: Option<&str>,
        name: Option<&str>,
        regex: bool,
    ) -> GrpcRouteRulesMatchesMethod {
        GrpcRouteRulesMatchesMethod {
            service: service.map(str::to_string),
            method: name.map(str::to_string),
            r#type: regex.then_some(GrpcRouteRulesMatchesMethodType::RegularExpression),
        }
    }

    #[test]
    fn methods_become_request_paths() {
        let path = |service, name, regex| method_path(&method(service, name, regex));
        assert!(matches!(
            path(Some("pkg.Svc"), Some("Get"), false),
            Ok(PathMatch::Exact(p)) if p == "/pkg.Svc/Get"
        ));
        assert!(matches!(
            path(Some("pkg.Svc"), None, false),
            Ok(PathMatch::SegmentPrefix(p)) if p == "/pkg.Svc"
        ));
        let Ok(PathMatch::Regex(name)) = path(None, Some("Get.x"), false) else {
            panic!("a method alone is a pattern");
        };
        assert!(name.is_match("/any.Svc/Get.x"));
        assert!(!name.is_match("/any.Svc/GetAx"));
        assert!(!name.is_match("/a/b/Get.x"));
        let Ok(PathMatch::Regex(pattern)) = path(Some("pkg\\..*"), Some("Get.*"), true) else {
            panic!("a regular expression match is a pattern");
        };
        assert!(pattern.is_match("/pkg.Svc/GetAll"));
        assert!(!pattern.is_match("/other.Svc/GetAll"));
        assert!(path(None, None, false).is_err());
    }
}
