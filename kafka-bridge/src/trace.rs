//! The trace an async task works for, carried across awaits: what the bridge puts in
//! the `traceparent` header of each record it sends (see [`mes_core::trace`] for the
//! format and why only that header is spoken).
//!
//! A server wraps the handling of an HTTP request in [`scope`] with the request's
//! trace; every call the bridge makes inside it sends a child of that trace. Work
//! outside any scope (the poller, the reconciler) starts a new trace per call. The
//! relay does not rely on a scope: each outbox row stores the trace that enqueued it,
//! and the relay passes it in [`CallOptions::trace`](crate::bridge::CallOptions::trace).

use std::future::Future;

pub use mes_core::trace::{HEADER, TraceParent};

tokio::task_local! {
    static TASK: Option<TraceParent>;
}

/// Runs `work` with [`current`] answering `trace` in it (and in the blocking
/// closures it hands a trace to with [`mes_core::trace::in_scope`]).
pub async fn scope<F: Future>(trace: Option<TraceParent>, work: F) -> F::Output {
    TASK.scope(trace, work).await
}

/// The trace of the current task's [`scope`], else of the current thread's
/// [`mes_core::trace::in_scope`], if any.
pub fn current() -> Option<TraceParent> {
    TASK.try_with(|trace| *trace)
        .ok()
        .flatten()
        .or_else(mes_core::trace::current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_s_trace_is_current_across_awaits_and_ends_with_it() {
        assert_eq!(current(), None);
        let trace = TraceParent::new_root();
        scope(Some(trace), async {
            tokio::task::yield_now().await;
            assert_eq!(current(), Some(trace));
        })
        .await;
        assert_eq!(current(), None);
    }

    #[test]
    fn outside_a_task_the_thread_s_trace_is_current() {
        let trace = TraceParent::new_root();
        mes_core::trace::in_scope(Some(trace), || assert_eq!(current(), Some(trace)));
    }
}
