//! `sluice ingress check --emit-config`: the routes and upstreams that Ingresses become,
//! written as sluice.yaml keys, for teams that would rather keep a file than run the
//! controller. Rejected objects are left out (the report says why). Files a route needs
//! (htpasswd users, CA bundles) are named under `/etc/sluice/secrets/NAMESPACE/SECRET/KEY`:
//! export them from their Secrets to there.

use crate::model::{
    Auth, BalancePolicy, EndpointSource, Fragment, HostMatch, LimitKey, OriginPattern, PageSource,
    PathMatch, PathRewrite, RedisFailureMode, RetryMethods, RouteConfig, ServicePort,
    UpstreamConfig, UpstreamProtocol,
};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// `by:` of a rate limit as the file writes it.
fn limit_key(by: &LimitKey) -> String {
    match by {
        LimitKey::Route => "route".to_string(),
        LimitKey::ClientIp => "client_ip".to_string(),
        LimitKey::Header(name) => format!("header:{name}"),
        LimitKey::Template(template) => template.to_string(),
    }
}

fn seconds(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        _ => format!("{}ms", duration.as_millis()),
    }
}

/// The regex of the file (anchored at both ends) matching what a prefix-anchored model
/// regex matches.
fn whole_path(regex: &str) -> String {
    let body = regex
        .strip_prefix("(?i)^")
        .map_or_else(|| regex.to_string(), |rest| format!("(?i)(?:{rest})"));
    format!("{body}.*")
}

/// Inserts `key: value` unless `value` is null, an empty list or an empty mapping.
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        map.insert(key.to_string(), value);
    }
}

/// A secret-backed file's path, from the model's `secret:NAMESPACE/NAME` origin.
fn secret_file(origin: &std::path::Path, key: &str) -> String {
    let name = origin.display().to_string();
    let secret = name.strip_prefix("secret:").unwrap_or(&name);
    format!("/etc/sluice/secrets/{secret}/{key}")
}

fn route(route: &RouteConfig) -> Value {
    let mut r = Map::new();
    put(&mut r, "name", json!(route.name));
    put(&mut r, "listener", json!(route.listener));
    put(
        &mut r,
        "hosts",
        json!(route.hosts.iter().map(HostMatch::key).collect::<Vec<_>>()),
    );
    let paths: Vec<Value> = route
        .paths
        .iter()
        .map(|p| match p {
            PathMatch::Exact(p) => json!({ "exact": p }),
            PathMatch::Prefix(p) => json!({ "prefix": p }),
            PathMatch::SegmentPrefix(p) => json!({ "segment_prefix": p }),
            PathMatch::Regex(r) => json!({ "regex": whole_path(r.as_str()) }),
        })
        .collect();
    put(&mut r, "paths", json!(paths));
    match route.backends.as_slice() {
        [one] if one.weight == 1 => put(&mut r, "upstream", json!(one.upstream)),
        many => put(
            &mut r,
            "backends",
            json!(many
                .iter()
                .map(|b| json!({ "upstream": b.upstream, "weight": b.weight }))
                .collect::<Vec<_>>()),
        ),
    }
    if let Some(canary) = &route.canary {
        let mut c = Map::new();
        put(&mut c, "upstream", json!(canary.upstream));
        if let Some(header) = &canary.header {
            put(&mut c, "header", json!(header.name.as_str()));
            match &header.value {
                Some(crate::model::ValueMatch::Exact(v)) => put(&mut c, "header_value", json!(v)),
                Some(crate::model::ValueMatch::Regex(p)) => {
                    put(&mut c, "header_pattern", json!(p.as_str()))
                }
                None => {}
            }
        }
        put(&mut c, "cookie", json!(canary.cookie));
        put(&mut c, "weight", json!(canary.weight));
        put(&mut c, "weight_total", json!(canary.weight_total));
        put(&mut r, "canary", Value::Object(c));
    }
    let filters = &route.filters;
    if let Some(redirect) = &filters.https_redirect {
        put(
            &mut r,
            "https_redirect",
            json!({ "port": redirect.port, "status": redirect.status.code() }),
        );
    }
    if let Some(redirect) = &filters.redirect {
        let mut d = Map::new();
        put(&mut d, "scheme", json!(redirect.scheme));
        put(&mut d, "host", json!(redirect.host));
        put(&mut d, "port", json!(redirect.port));
        if let Some(PathRewrite::Full(path)) = &redirect.path {
            put(&mut d, "path", json!(path));
        }
        put(&mut d, "status", json!(redirect.status.code()));
        put(&mut r, "redirect", Value::Object(d));
    }
    put(&mut r, "app_root", json!(filters.app_root));
    let mut rewrite = Map::new();
    if let Some(PathRewrite::Regex {
        pattern,
        replacement,
    }) = &filters.rewrite.path
    {
        let pattern = format!(".*?(?:{}).*", pattern.as_str());
        put(
            &mut rewrite,
            "regex",
            json!({ "pattern": pattern, "replacement": replacement }),
        );
    }
    put(&mut rewrite, "host", json!(filters.rewrite.host));
    put(
        &mut rewrite,
        "forwarded_prefix",
        json!(filters.rewrite.forwarded_prefix),
    );
    put(&mut r, "rewrite", Value::Object(rewrite));
    let timeouts = &route.timeouts;
    let mut t = Map::new();
    for (key, value) in [
        ("connect", timeouts.connect),
        ("read", timeouts.read),
        ("write", timeouts.write),
    ] {
        put(&mut t, key, json!(value.map(seconds)));
    }
    put(&mut r, "timeouts", Value::Object(t));
    match route.body.max_size {
        Some(bytes) if bytes != crate::model::DEFAULT_MAX_BODY_SIZE => {
            put(&mut r, "max_body_size", json!(bytes.to_string()))
        }
        None => {
            put(&mut r, "max_body_size", json!("0"));
            put(&mut r, "request_buffering", json!(false));
        }
        _ => {}
    }
    if let Some(affinity) = &route.affinity {
        let mut cookie = Map::new();
        put(&mut cookie, "name", json!(affinity.name));
        put(&mut cookie, "path", json!(affinity.path));
        put(&mut cookie, "max_age", json!(affinity.max_age.map(seconds)));
        put(
            &mut cookie,
            "same_site",
            json!(affinity.same_site.map(|s| s.as_str().to_ascii_lowercase())),
        );
        if affinity.secure {
            put(&mut cookie, "secure", json!(true));
        }
        put(&mut r, "affinity", json!({ "cookie": cookie }));
    }
    let networks = |list: &[crate::model::IpNet]| -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    };
    put(&mut r, "allow", json!(networks(&route.access.allow)));
    put(&mut r, "deny", json!(networks(&route.access.deny)));
    if let Some(cors) = &route.cors {
        let origins: Vec<String> = cors
            .allow_origins
            .iter()
            .map(|o| match o {
                OriginPattern::Any => "*".to_string(),
                OriginPattern::Exact(e) => e.clone(),
                OriginPattern::Wildcard { before, after } => format!("{before}*{after}"),
            })
            .collect();
        let names = |list: &[http::HeaderName]| -> Vec<String> {
            list.iter().map(|h| h.as_str().to_string()).collect()
        };
        let mut c = Map::new();
        put(&mut c, "allow_origins", json!(origins));
        put(
            &mut c,
            "allow_methods",
            json!(cors
                .allow_methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()),
        );
        put(&mut c, "allow_headers", json!(names(&cors.allow_headers)));
        put(&mut c, "expose_headers", json!(names(&cors.expose_headers)));
        put(&mut c, "allow_credentials", json!(cors.allow_credentials));
        put(&mut c, "max_age", json!(cors.max_age.map(seconds)));
        put(&mut r, "cors", Value::Object(c));
    }
    match &route.auth {
        Some(Auth::Basic(basic)) => put(
            &mut r,
            "auth",
            json!({ "basic": { "htpasswd": secret_file(&basic.file, "auth"), "realm": basic.realm } }),
        ),
        Some(Auth::External(external)) => {
            let mut e = Map::new();
            put(&mut e, "upstream", json!(external.upstream));
            put(&mut e, "path", json!(external.path));
            put(
                &mut e,
                "method",
                json!(external.method.as_ref().map(|m| m.as_str())),
            );
            put(
                &mut e,
                "response_headers",
                json!(external
                    .response_headers
                    .iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()),
            );
            put(&mut e, "signin", json!(external.signin));
            put(&mut r, "auth", json!({ "external": e }));
        }
        None => {}
    }
    if let Some(limit) = &route.rate_limit {
        let mut l = Map::new();
        put(
            &mut l,
            "requests_per_second",
            json!(limit.requests_per_second),
        );
        put(&mut l, "burst", json!(limit.burst));
        put(&mut l, "by", json!(limit_key(&limit.by)));
        put(&mut l, "exempt", json!(networks(&limit.exempt)));
        put(&mut r, "rate_limit", Value::Object(l));
    }
    if let Some(limit) = &route.global_rate_limit {
        let mut l = Map::new();
        put(&mut l, "requests", json!(limit.requests));
        put(&mut l, "window", json!(seconds(limit.window)));
        put(&mut l, "by", json!(limit_key(&limit.by)));
        put(&mut l, "exempt", json!(networks(&limit.exempt)));
        if let RedisFailureMode::Reject(status) = limit.on_redis_failure {
            put(&mut l, "on_redis_failure", json!("reject"));
            put(&mut l, "failure_status", json!(status));
        }
        put(&mut r, "global_rate_limit", Value::Object(l));
    }
    put(
        &mut r,
        "max_concurrent_per_client",
        json!(route.max_concurrent_per_client),
    );
    if let Some(pages) = &route.error_pages {
        let rules: Vec<Value> = pages
            .rules
            .iter()
            .filter_map(|rule| match &rule.source {
                PageSource::Upstream(upstream) => {
                    Some(json!({ "status": rule.statuses, "upstream": upstream }))
                }
                PageSource::File(_) => None,
            })
            .collect();
        put(&mut r, "error_pages", json!(rules));
    }
    if let Some(ca) = route
        .require_client_certificate
        .as_ref()
        .and_then(|r| r.ca.as_ref())
    {
        put(
            &mut r,
            "require_client_certificate",
            json!({ "ca": secret_file(&ca.file, "ca.crt"), "verify_depth": ca.verify_depth }),
        );
    }
    Value::Object(r)
}

fn upstream(upstream: &UpstreamConfig) -> Value {
    let mut u = Map::new();
    put(&mut u, "name", json!(upstream.name));
    match &upstream.source {
        EndpointSource::Kubernetes(service) => {
            let port = match &service.port {
                ServicePort::Number(n) => json!(n),
                ServicePort::Name(name) => json!(name),
            };
            put(
                &mut u,
                "kubernetes",
                json!({ "namespace": service.namespace, "service": service.service, "port": port }),
            );
        }
        EndpointSource::Dns(dns) => {
            put(&mut u, "dns", json!({ "name": dns.name, "port": dns.port }))
        }
        EndpointSource::Static => put(
            &mut u,
            "endpoints",
            json!(upstream
                .endpoints
                .iter()
                .map(|e| e.address.to_string())
                .collect::<Vec<_>>()),
        ),
    }
    if upstream.protocol != UpstreamProtocol::Http1 {
        put(&mut u, "protocol", json!(upstream.protocol));
    }
    if let Some(tls) = &upstream.tls {
        let mut t = Map::new();
        put(&mut t, "sni", json!(tls.sni));
        put(&mut t, "verify", json!(tls.verify));
        put(
            &mut t,
            "ca_file",
            json!(tls.ca_file.as_deref().map(|f| secret_file(f, "ca.crt"))),
        );
        put(&mut u, "tls", Value::Object(t));
    }
    if upstream.balance != BalancePolicy::RoundRobin {
        put(&mut u, "balance", json!(upstream.balance));
    }
    put(
        &mut u,
        "hash_key",
        json!(upstream.hash_key.as_ref().map(|k| k.template())),
    );
    let retry = upstream.retry;
    if retry != crate::model::RetryPolicy::DEFAULT {
        let mut on = Vec::new();
        if retry.on_connect_failure {
            on.push("connect_failure");
        }
        if retry.on_reset_before_response {
            on.push("reset_before_response");
        }
        let methods = match retry.methods {
            RetryMethods::Idempotent => "idempotent",
            RetryMethods::All => "all",
        };
        let mut r = json!({ "attempts": retry.attempts, "on": on, "methods": methods });
        if !retry.on_status.is_empty() {
            r["on_status"] = json!(retry.on_status.iter().collect::<Vec<_>>());
        }
        if let Some(backoff) = retry.backoff {
            r["backoff"] = json!(format!("{}ms", backoff.as_millis()));
        }
        put(&mut u, "retry", r);
    }
    Value::Object(u)
}

/// The `routes` and `upstreams` of `fragments` as sluice.yaml text, after a comment that
/// says what else the file needs.
pub fn emit(fragments: &[&Fragment]) -> String {
    let routes: Vec<Value> = fragments
        .iter()
        .flat_map(|f| f.routes.iter().map(|r| route(r)))
        .collect();
    let upstreams: Vec<Value> = fragments
        .iter()
        .flat_map(|f| f.upstreams.iter().map(|u| upstream(u)))
        .collect();
    let mut certificates: Vec<String> = fragments
        .iter()
        .flat_map(|f| f.certificates.iter())
        .map(|c| {
            format!(
                "#   {} on listener {}",
                c.certificate.names.join(", "),
                c.listener
            )
        })
        .collect();
    certificates.dedup();
    let mut text = String::from(
        "# Generated by `sluice ingress check --emit-config` from Ingress objects.\n\
         # Add listeners (the routes name them) and merge these keys into sluice.yaml. Files\n\
         # under /etc/sluice/secrets/NAMESPACE/SECRET/KEY are the keys of those Secrets.\n",
    );
    if !certificates.is_empty() {
        text.push_str(
            "# TLS certificates from Secrets, for the https listener's tls.certificates:\n",
        );
        for line in certificates {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let document = json!({ "routes": routes, "upstreams": upstreams });
    match serde_yaml::to_string(&document) {
        Ok(yaml) => text.push_str(&yaml),
        Err(e) => text.push_str(&format!("# cannot write YAML: {e}\n")),
    }
    text
}
