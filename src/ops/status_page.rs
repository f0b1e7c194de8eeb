//! The status page (`/status` on the admin listener): what HAProxy's stats page and
//! Traefik's dashboard show their users, server-rendered from the same data as
//! `/status.json`, with no script and no external asset (it works air-gapped), refreshing
//! itself every few seconds.
//!
//! Every value is escaped: route names, origins and error messages come from Kubernetes
//! objects that other teams write.

use serde_json::Value;
use std::fmt::Write;

/// Seconds between the page's refreshes.
const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.4em 0}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f2f2f2}td.num{text-align:right}\
.state{font-weight:600;border-radius:3px;padding:0 .4em}\
.serving{background:#d7f5dd}.slow_start{background:#fff3c4}.unknown{background:#eee}\
.unhealthy,.ejected{background:#ffd6d6}.terminating{background:#e6e0f5}\
.error{color:#a00}";

/// The page of `status` (what `/status.json` answers).
pub fn render(status: &Value) -> String {
    let mut page = String::with_capacity(16 * 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>sluice status</title><style>{STYLE}</style></head><body>\
         <h1>sluice {} &middot; generation {}</h1>",
        text(&status["version"]),
        text(&status["generation"]),
    );
    upstreams(&mut page, &status["upstreams"]);
    listeners(&mut page, &status["listeners"]);
    routes(&mut page, &status["routes"]);
    reloads(&mut page, &status["reloads"]);
    rejected(&mut page, &status["rejected"]);
    page.push_str("</body></html>\n");
    page
}

fn upstreams(page: &mut String, upstreams: &Value) {
    page.push_str("<h2>Upstreams</h2>");
    for upstream in list(upstreams) {
        let name = text(&upstream["name"]);
        let _ = write!(
            page,
            "<h3 id=\"upstream-{name}\">{name}{}</h3>\
             <table class=\"endpoints\" data-upstream=\"{name}\"><tr><th>endpoint</th>\
             <th>state</th><th>health check</th><th>ejected until</th><th>slow start</th>\
             <th>in flight</th><th>tries/s</th><th>failures/s</th><th>tries</th>\
             <th>failures</th></tr>",
            if upstream["panic"] == true {
                " <span class=\"error\">(panic: every endpoint gets traffic)</span>"
            } else {
                ""
            }
        );
        for endpoint in list(&upstream["endpoints"]) {
            let state = text(&endpoint["state"]);
            let check = &endpoint["last_check"];
            let checked = if check.is_null() {
                text(&endpoint["health"])
            } else {
                format!(
                    "{}: {} ({})",
                    text(&endpoint["health"]),
                    text(&check["result"]),
                    text(&check["at"])
                )
            };
            let slow_start = match endpoint["slow_start"]["share"].as_f64() {
                Some(share) => format!("{:.0}%", share * 100.0),
                None => String::new(),
            };
            let _ = write!(
                page,
                "<tr class=\"endpoint\" data-address=\"{address}\" data-state=\"{state}\">\
                 <td>{address}</td><td><span class=\"state {state}\">{state}</span></td>\
                 <td>{checked}</td><td>{ejected}</td><td>{slow_start}</td>\
                 <td class=\"num\">{in_flight}</td><td class=\"num\">{rate:.1}</td>\
                 <td class=\"num\">{failure_rate:.1}</td><td class=\"num\">{tries}</td>\
                 <td class=\"num\">{failures}</td></tr>",
                address = text(&endpoint["address"]),
                ejected = text(&endpoint["ejected_until"]),
                in_flight = text(&endpoint["in_flight"]),
                rate = endpoint["tries_per_second"].as_f64().unwrap_or(0.0),
                failure_rate = endpoint["failures_per_second"].as_f64().unwrap_or(0.0),
                tries = text(&endpoint["tries"]),
                failures = text(&endpoint["failures"]),
            );
        }
        page.push_str("</table>");
    }
}

fn listeners(page: &mut String, listeners: &Value) {
    page.push_str(
        "<h2>Listeners</h2><table><tr><th>name</th><th>address</th><th>protocol</th>\
         <th>certificates</th><th>from</th></tr>",
    );
    for listener in list(listeners) {
        let names: Vec<String> = list(&listener["certificates"])
            .iter()
            .map(|c| {
                let names: Vec<String> = list(&c["names"]).iter().map(text).collect();
                names.join(" ")
            })
            .collect();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&listener["name"]),
            text(&listener["listen"]),
            text(&listener["protocol"]),
            names.join("; "),
            text(&listener["origin"]),
        );
    }
    page.push_str("</table>");
}

fn routes(page: &mut String, routes: &Value) {
    page.push_str(
        "<h2>Routes</h2><table><tr><th>name</th><th>listener</th><th>hosts</th><th>paths</th>\
         <th>upstreams</th><th>from</th></tr>",
    );
    for route in list(routes) {
        let hosts: Vec<String> = list(&route["hosts"]).iter().map(text).collect();
        let paths: Vec<String> = list(&route["paths"])
            .iter()
            .filter_map(|p| p.as_object())
            .flat_map(|p| {
                p.iter()
                    .map(|(kind, path)| format!("{} {}", escape(kind), text(path)))
            })
            .collect();
        let backends: Vec<String> = list(&route["backends"])
            .iter()
            .map(|b| format!("{} ({})", text(&b["upstream"]), text(&b["weight"])))
            .collect();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&route["name"]),
            text(&route["listener"]),
            if hosts.is_empty() {
                "*".to_string()
            } else {
                hosts.join(" ")
            },
            if paths.is_empty() {
                "every path".to_string()
            } else {
                paths.join("<br>")
            },
            backends.join(" "),
            text(&route["origin"]),
        );
    }
    page.push_str("</table>");
}

fn reloads(page: &mut String, reloads: &Value) {
    page.push_str("<h2>Last config reloads</h2>");
    let reloads = list(reloads);
    if reloads.is_empty() {
        page.push_str("<p>None since the start.</p>");
        return;
    }
    page.push_str("<table><tr><th>at</th><th>trigger</th><th>outcome</th></tr>");
    for reload in reloads {
        let outcome = if reload["error"].is_null() {
            format!("generation {}", text(&reload["generation"]))
        } else {
            format!(
                "<span class=\"error\">refused: {}</span>",
                text(&reload["error"])
            )
        };
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{outcome}</td></tr>",
            text(&reload["at"]),
            text(&reload["trigger"]),
        );
    }
    page.push_str("</table>");
}

fn rejected(page: &mut String, rejected: &Value) {
    page.push_str("<h2>Rejected objects</h2>");
    let rejected = list(rejected);
    if rejected.is_empty() {
        page.push_str("<p>None.</p>");
        return;
    }
    page.push_str("<table><tr><th>source</th><th>object</th><th>errors</th></tr>");
    for object in rejected {
        let errors: Vec<String> = list(&object["errors"]).iter().map(text).collect();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
            text(&object["source"]),
            text(&object["origin"]),
            errors.join("<br>"),
        );
    }
    page.push_str("</table>");
}

/// The items of a JSON array (none for anything else).
fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// A JSON value as escaped text: strings without quotes, `null` as nothing.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    }
}

/// `raw` with HTML's special characters escaped (as text and as a quoted attribute).
fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_value_is_escaped() {
        let status = json!({
            "version": "1",
            "generation": 3,
            "upstreams": [{"name": "app", "panic": false, "endpoints": [
                {"address": "10.0.0.1:80", "state": "ejected", "health": "healthy",
                 "ejected_until": "2026-12-04T10:00:00Z", "in_flight": 2, "tries": 5,
                 "failures": 1, "tries_per_second": 0.5, "failures_per_second": 0.1}
            ]}],
            "routes": [{"name": "<script>alert(1)</script>", "listener": "web",
                        "hosts": ["a\"b"], "paths": [{"prefix": "/"}],
                        "backends": [{"upstream": "app", "weight": 1}],
                        "origin": "HTTPRoute team/x"}],
            "reloads": [],
            "rejected": [{"source": "gateway", "origin": "HTTPRoute t/y",
                          "errors": ["bad <value>"]}],
        });
        let page = render(&status);
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a&quot;b"));
        assert!(page.contains("bad &lt;value&gt;"));
        assert!(page.contains("data-address=\"10.0.0.1:80\" data-state=\"ejected\""));
        assert!(page.contains("<meta http-equiv=\"refresh\""));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "an external asset"
        );
    }
}
