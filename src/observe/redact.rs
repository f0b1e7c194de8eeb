//! Hiding credentials in what the admin listener serves: the password of a URL's user
//! information (`https://user:secret@host`) and every value of a query string
//! of a URL or path (`/healthz?token=secret`), wherever they appear in a JSON document.

use serde_json::Value;

/// What replaces a hidden value.
const REDACTED: &str = "REDACTED";

/// Redacts every string of `value`, recursively.
pub fn credentials(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(redacted) = redact_text(text) {
                *text = redacted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(credentials),
        Value::Object(fields) => fields.values_mut().for_each(credentials),
        _ => {}
    }
}

/// `text` with a URL password and query values replaced, or `None` when it has neither.
fn redact_text(text: &str) -> Option<String> {
    let mut out = text.to_string();
    let mut changed = false;
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = authority_start..authority_start + at;
            let user = out[userinfo.clone()]
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            out.replace_range(userinfo, &format!("{user}:{REDACTED}"));
            changed = true;
        }
    }
    // Only URLs and paths have query strings; a `?` elsewhere (a path regex) is kept.
    let url_or_path = out.starts_with('/') || out.contains("://");
    if let Some(query_start) = out.find('?').filter(|_| url_or_path) {
        let query_end = out[query_start..]
            .find('#')
            .map_or(out.len(), |i| query_start + i);
        let query: Vec<String> = out[query_start + 1..query_end]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={REDACTED}"),
                None => pair.to_string(),
            })
            .collect();
        out.replace_range(query_start + 1..query_end, &query.join("&"));
        changed = true;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn passwords_and_query_values_are_hidden() {
        let mut value = json!({
            "api": "https://admin:s3cret@k8s.example:6443/path",
            "health": ["/healthz?token=abc&verbose", "/plain"],
            "nested": { "url": "redis://:pw@cache:6379/0?password=x#frag" },
            "number": 3,
            "regex": "^/v?1/",
        });
        credentials(&mut value);
        assert_eq!(value["api"], "https://admin:REDACTED@k8s.example:6443/path");
        assert_eq!(value["health"][0], "/healthz?token=REDACTED&verbose");
        assert_eq!(value["health"][1], "/plain");
        assert_eq!(
            value["nested"]["url"],
            "redis://:REDACTED@cache:6379/0?password=REDACTED#frag"
        );
        assert_eq!(value["number"], 3);
        assert_eq!(value["regex"], "^/v?1/");
    }
}
