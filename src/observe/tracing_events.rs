//! Dependencies that report through `tracing` (kube, h2, hyper) reach sluice's `log` output
//! through this subscriber: their events become log records with the same target and
//! level, so `RUST_LOG` filters them as before; their spans are disabled.
//!
//! Without a subscriber, `tracing` (built with its `log` feature in this dependency tree)
//! forwards every span entry and exit to `log` as well: the `h2` crate opens spans per
//! frame, which cost 5% of an HTTP/2 request (bench/README.md, issue #12). A disabled span
//! costs one cached interest check.

use std::fmt::{self, Write};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Events to `log`; spans off.
struct EventsToLog;

/// The `log` level of a `tracing` level.
fn log_level(level: &Level) -> log::Level {
    match *level {
        Level::ERROR => log::Level::Error,
        Level::WARN => log::Level::Warn,
        Level::INFO => log::Level::Info,
        Level::DEBUG => log::Level::Debug,
        Level::TRACE => log::Level::Trace,
    }
}

/// Targets whose errors sluice reports itself: kube's client logs every failed API request
/// as an ERROR (four a second with the API down); sluice's discovery counts each failure and
/// logs when the watch fails and recovers. Their events are kept at debug level.
const DEMOTED_TARGETS: [&str; 2] = ["kube_client", "kube_runtime"];

/// The `log` level an event of `metadata` is logged at.
fn level_of(metadata: &Metadata<'_>) -> log::Level {
    let level = log_level(metadata.level());
    let demoted = DEMOTED_TARGETS
        .iter()
        .any(|target| metadata.target().starts_with(target));
    if demoted {
        level.max(log::Level::Debug)
    } else {
        level
    }
}

/// An event's fields as one line: the message, then `name=value` for the others.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn into_string(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Writing into a String cannot fail.
        let _ = if field.name() == "message" {
            write!(self.message, "{value:?}")
        } else {
            let separator = if self.fields.is_empty() { "" } else { " " };
            write!(self.fields, "{separator}{}={value:?}", field.name())
        };
    }
}

impl Subscriber for EventsToLog {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.is_span() {
            Interest::never()
        } else {
            // Asked again per event: `RUST_LOG`'s level is read at each one.
            Interest::sometimes()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && level_of(metadata) <= log::max_level()
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // Never called for a disabled span; any id will do.
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let level = level_of(metadata);
        let logger = log::logger();
        let log_metadata = log::Metadata::builder()
            .level(level)
            .target(metadata.target())
            .build();
        if !logger.enabled(&log_metadata) {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let line = line.into_string();
        logger.log(
            &log::Record::builder()
                .metadata(log_metadata)
                .module_path(metadata.module_path())
                .file(metadata.file())
                .line(metadata.line())
                .args(format_args!("{line}"))
                .build(),
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Installs the subscriber for the whole process; call once, after the logger.
pub fn init() {
    if tracing::subscriber::set_global_default(EventsToLog).is_err() {
        log::warn!("a tracing subscriber was already set; dependency events keep going there");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::subscriber::with_default;

    #[test]
    fn spans_are_disabled_and_events_follow_the_log_level() {
        log::set_max_level(log::LevelFilter::Warn);
        with_default(EventsToLog, || {
            let span = tracing::info_span!("frame", id = 3);
            assert!(span.is_disabled());
            assert!(tracing::event_enabled!(Level::WARN));
            assert!(!tracing::event_enabled!(Level::INFO));
        });
    }

    #[test]
    fn fields_become_one_line() {
        struct Capture(std::sync::Mutex<Vec<String>>);
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let mut line = Line::default();
                event.record(&mut line);
                let line = line.into_string();
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let capture = std::sync::Arc::new(Capture(Default::default()));
        with_default(capture.clone(), || {
            tracing::warn!(namespace = "shop", "watch failed");
        });
        let lines = capture.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(lines, vec!["watch failed namespace=\"shop\"".to_string()]);
    }
}
