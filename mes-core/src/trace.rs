//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` that
//! follows one operator click from its HTTP request, through the outbox row it
//! enqueued, to the Kafka record the relay sends for it, and the trace id that the
//! logs of each step carry.
//!
//! Only the `traceparent` header is spoken (version `00`): we record no spans and
//! export nothing, so an OpenTelemetry SDK (with its exporter pipeline) would be
//! weight without use; a tracing system that reads the headers and the logs' trace ids
//! joins our steps to its own. `tracestate` is neither read nor written.
//!
//! Synchronous code (a database transaction on the blocking pool) reads the trace it
//! works for with [`current`], which [`in_scope`] sets for the length of a closure;
//! the async side (`kafka_bridge::trace`) carries it across awaits and hands it over.

use std::cell::Cell;
use std::fmt;

/// The header (HTTP and Kafka) that carries a [`TraceParent`].
pub const HEADER: &str = "traceparent";

/// One `traceparent`: the trace an operation belongs to and the operation (span) that
/// caused the next step.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The `sampled` flag: set on the traces we start (our logs record every step).
const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A new trace, for work that no incoming `traceparent` caused (a request without
    /// one, a background scan).
    pub fn new_root() -> TraceParent {
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        TraceParent {
            trace_id,
            parent_id: new_span_id(),
            flags: SAMPLED,
        }
    }

    /// The next step of the same trace: the same trace id and flags, a new span id
    /// (the one a record or a request we send names as its parent).
    pub fn child(&self) -> TraceParent {
        TraceParent {
            parent_id: new_span_id(),
            ..*self
        }
    }

    /// Reads a `traceparent` value as the recommendation says a receiver must: version
    /// `00` exactly (55 characters), or a later version's first four fields (longer,
    /// with `-` after them); lowercase hex only; no all-zero trace or parent id;
    /// version `ff` is invalid. `None` for anything else: the caller starts a new
    /// trace rather than continue a malformed one.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = hex_byte(&bytes[0..2])?;
        match (version, bytes.len()) {
            (0xff, _) => return None,
            (0x00, 55) => {}
            (0x00, _) => return None,
            (_, 55) => {}
            (_, _) if bytes[55] == b'-' => {}
            _ => return None,
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&bytes[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, byte) in parent_id.iter_mut().enumerate() {
            *byte = hex_byte(&bytes[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&bytes[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id as 32 lowercase hex digits: what logs carry and what a search
    /// across logs and Kafka headers looks for.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn parent_id(&self) -> String {
        hex(&self.parent_id)
    }
}

/// Version `00`'s form: `00-<trace id>-<parent id>-<flags>`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// A random span id (never all zero).
fn new_span_id() -> [u8; 8] {
    loop {
        let mut id = [0u8; 8];
        id.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        if id != [0; 8] {
            return id;
        }
    }
}

/// Two lowercase hex digits (the recommendation forbids uppercase).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

thread_local! {
    static CURRENT: Cell<Option<TraceParent>> = const { Cell::new(None) };
}

/// The trace the code on this thread works for, if [`in_scope`] set one.
pub fn current() -> Option<TraceParent> {
    CURRENT.with(Cell::get)
}

/// Runs `f` with [`current`] answering `trace`, then restores what it answered
/// before (also when `f` panics).
pub fn in_scope<T>(trace: Option<TraceParent>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<TraceParent>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(trace)));
    f()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_recommendation_s_example_reads_and_writes_back() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id(), "00f067aa0ba902b7");
        assert_eq!(tp.to_string(), EXAMPLE);
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_and_gets_a_new_span() {
        let tp = TraceParent::parse(EXAMPLE).unwrap();
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.parent_id(), tp.parent_id());
        assert!(child.to_string().ends_with("-01"));
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
    }

    #[test]
    fn new_roots_are_valid_sampled_and_distinct() {
        let (a, b) = (TraceParent::new_root(), TraceParent::new_root());
        assert_ne!(a.trace_id(), b.trace_id());
        for tp in [a, b] {
            let text = tp.to_string();
            assert_eq!(text.len(), 55);
            assert!(text.starts_with("00-") && text.ends_with("-01"), "{text}");
            assert_eq!(TraceParent::parse(&text), Some(tp));
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        let upper = EXAMPLE.to_uppercase();
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let version_ff = EXAMPLE.replacen("00", "ff", 1);
        let v00_longer = format!("{EXAMPLE}-extra");
        let bad_separator = EXAMPLE.replacen('-', "_", 1);
        for bad in [
            "",
            "garbage",
            &EXAMPLE[..54],
            &upper,
            zero_trace,
            zero_parent,
            &version_ff,
            &v00_longer,
            &bad_separator,
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_s_first_fields_are_read() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        let tp = TraceParent::parse(later).unwrap();
        assert_eq!(tp.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            None
        );
    }

    #[test]
    fn in_scope_sets_and_restores_the_current_trace() {
        assert_eq!(current(), None);
        let outer = TraceParent::new_root();
        let inner = TraceParent::new_root();
        in_scope(Some(outer), || {
            assert_eq!(current(), Some(outer));
            in_scope(Some(inner), || assert_eq!(current(), Some(inner)));
            assert_eq!(current(), Some(outer));
        });
        assert_eq!(current(), None);
    }
}
