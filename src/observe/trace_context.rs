//! W3C Trace Context (`traceparent`, `tracestate`) and head sampling.
//!
//! A request arrives with or without a `traceparent`. sluice keeps its trace id (or starts
//! a trace), gives the request a server span of its own, and each try of an upstream a
//! client span whose id is the parent the upstream sees. Whether the trace is recorded is
//! decided once, at the head: the caller's sampled flag when sampling is parent-based and
//! there is a caller, else a share of trace ids. An unsampled request still propagates its
//! context (flag 0), so services behind sluice stay in the caller's trace.

use std::fmt;

/// A trace id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random trace id.
    pub fn random() -> Self {
        loop {
            let id: u128 = rand::random();
            if id != 0 {
                return Self(id.to_be_bytes());
            }
        }
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> Self {
        loop {
            let id: u64 = rand::random();
            if id != 0 {
                return Self(id.to_be_bytes());
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a valid `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Parses a `traceparent` value as the W3C Trace Context specification (level 1) reads
/// one: `None` when it is invalid, and the request then starts a trace of its own.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
    const LEN: usize = 55;
    let head = value.get(..LEN)?;
    let version = hex::<1>(&head[0..2])?[0];
    // Version ff is invalid; version 00 has nothing after the flags; a later version
    // may, after a dash.
    match version {
        0xff => return None,
        0x00 if value.len() != LEN => return None,
        _ if value.len() > LEN && value[LEN] != b'-' => return None,
        _ => {}
    }
    if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
        return None;
    }
    let trace_id = hex::<16>(&head[3..35])?;
    let span_id = hex::<8>(&head[36..52])?;
    let flags = hex::<1>(&head[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        sampled: flags & 1 == 1,
    })
}

/// Lower-case hex of exactly `N` bytes (upper case is invalid in `traceparent`).
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The `traceparent` a request carries on to an upstream: version 00, `span_id` the span
/// of the try.
pub fn traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled))
}

/// Head sampling: which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// The share of traces recorded (0 to 1) that no sampled caller decided.
    pub ratio: f64,
    /// A caller's `traceparent` decides for its trace.
    pub parent_based: bool,
}

impl Sampler {
    /// Whether the trace `trace_id`, continued from `parent` if any, is recorded.
    pub fn samples(&self, trace_id: TraceId, parent: Option<&Parent>) -> bool {
        if let (true, Some(parent)) = (self.parent_based, parent) {
            return parent.sampled;
        }
        // As OpenTelemetry's TraceIdRatioBased: the trace id's low 63 bits against the
        // ratio's share of them, so every service with one ratio agrees on a trace.
        let mut low = [0; 8];
        low.copy_from_slice(&trace_id.0[8..]);
        let value = u64::from_be_bytes(low) >> 1;
        let bound = (self.ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
        value < bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let parent = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        let unsampled = VALID.replace("-01", "-00");
        assert!(
            !parse_traceparent(unsampled.as_bytes())
                .expect("valid")
                .sampled
        );
        // A later version may add fields after a dash.
        let later = VALID.replace("00-4bf", "01-4bf") + "-what-comes";
        assert!(parse_traceparent(later.as_bytes()).is_some());
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            // Upper case, zero ids, version ff, version 00 with more after it.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_traceparent_is_written_as_read() {
        let parent = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(traceparent(parent.trace_id, parent.span_id, true), VALID);
    }

    #[test]
    fn sampling_follows_the_caller_or_the_ratio() {
        let parent = parse_traceparent(VALID.as_bytes()).expect("valid");
        let none = Sampler {
            ratio: 0.0,
            parent_based: true,
        };
        assert!(none.samples(parent.trace_id, Some(&parent)));
        assert!(!none.samples(TraceId::random(), None));
        let all = Sampler {
            ratio: 1.0,
            parent_based: false,
        };
        let unsampled = Parent {
            sampled: false,
            ..parent
        };
        assert!(all.samples(parent.trace_id, Some(&unsampled)));
        let half = Sampler {
            ratio: 0.5,
            parent_based: false,
        };
        let sampled = (0..10_000)
            .filter(|_| half.samples(TraceId::random(), None))
            .count();
        // 5,000 expected; 5 standard deviations (50 each) either side.
        assert!((4_750..=5_250).contains(&sampled), "{sampled}");
    }
}
