//! What sluice tells operators: Prometheus metrics, the JSON access log and OpenTelemetry
//! spans; and how its dependencies' `tracing` events reach the log.

pub mod access_log;
pub(crate) mod events;
pub mod metrics;
pub mod process;
pub(crate) mod redact;
pub mod spans;
pub mod trace_context;
pub mod tracing_events;

/// `text` on one line: line breaks become ` | ` (a multi-line message, such as a list of
/// config errors, would otherwise split into lines a log pipeline takes for separate events).
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\n', '\r']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    std::borrow::Cow::Owned(lines.join(" | "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_become_one_line() {
        assert_eq!(super::one_line("plain"), "plain");
        assert_eq!(
            super::one_line("rejected:\r\na.yaml:1: x\n\nb.yaml:2: y\n"),
            "rejected: | a.yaml:1: x | b.yaml:2: y"
        );
    }
}
