//! The legacy slot: one chain request in flight behind a gateway that echoes only the
//! token, handed to waiting callers by priority (operators before background work),
//! then in arrival order.
//!
//! A FIFO semaphore would let a relay retrying unanswered messages, or a poller paging
//! through a large ledger, sit in front of an operator for many request timeouts; here
//! an operator waits at most for the request in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Who a chain call is for. The legacy slot goes to the highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Work nobody is waiting for: the outbox relay, the poller. Yields to operators.
    Background,
    /// A person is waiting for the answer (an HTTP call).
    #[default]
    Operator,
}

impl Priority {
    /// Label used in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Priority::Background => "background",
            Priority::Operator => "operator",
        }
    }
}

/// Why [`LegacySlot::acquire`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcquireError {
    /// The deadline passed first.
    Timeout,
    /// The slot was closed (shutdown).
    Closed,
}

/// Waiters are served in key order: higher priority first, then arrival.
type WaiterKey = (std::cmp::Reverse<Priority>, u64);

#[derive(Default)]
struct State {
    held: bool,
    closed: bool,
    next: u64,
    waiters: BTreeMap<WaiterKey, oneshot::Sender<()>>,
}

/// A single permit handed out by priority.
#[derive(Default)]
pub(crate) struct LegacySlot {
    state: Mutex<State>,
}

/// Holding the slot; dropping it hands the slot to the next waiter.
pub(crate) struct SlotPermit {
    slot: Arc<LegacySlot>,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.slot.release();
    }
}

impl LegacySlot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the slot if nobody holds it.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Result<Option<SlotPermit>, AcquireError> {
        let mut state = self.state();
        if state.closed {
            return Err(AcquireError::Closed);
        }
        if state.held {
            return Ok(None);
        }
        state.held = true;
        Ok(Some(SlotPermit {
            slot: Arc::clone(self),
        }))
    }

    /// Waits for the slot until `deadline`, behind every waiter of a higher priority
    /// and every earlier one of the same.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        priority: Priority,
        deadline: Instant,
    ) -> Result<SlotPermit, AcquireError> {
        let (key, rx) = {
            let mut state = self.state();
            if state.closed {
                return Err(AcquireError::Closed);
            }
            if !state.held {
                state.held = true;
                return Ok(SlotPermit {
                    slot: Arc::clone(self),
                });
            }
            let key = (std::cmp::Reverse(priority), state.next);
            state.next += 1;
            let (tx, rx) = oneshot::channel();
            state.waiters.insert(key, tx);
            (key, rx)
        };
        let mut rx = rx;
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(())) => Ok(SlotPermit {
                slot: Arc::clone(self),
            }),
            Ok(Err(_)) => Err(AcquireError::Closed),
            Err(_) => {
                let handed = self.state().waiters.remove(&key).is_none();
                // The slot may have been handed over just as the deadline passed: pass
                // it on rather than leave it held by nobody.
                if handed && rx.try_recv().is_ok() {
                    drop(SlotPermit {
                        slot: Arc::clone(self),
                    });
                }
                Err(AcquireError::Timeout)
            }
        }
    }

    /// Callers waiting for the slot, by priority.
    pub(crate) fn waiting(&self, priority: Priority) -> usize {
        self.state()
            .waiters
            .keys()
            .filter(|(p, _)| p.0 == priority)
            .count()
    }

    /// Fails every waiter and every later call.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.waiters.clear();
    }

    fn release(&self) {
        let mut state = self.state();
        while let Some((_, tx)) = state.waiters.pop_first() {
            if tx.send(()).is_ok() {
                return; // handed over: still held
            }
            // That waiter gave up (its future was dropped): try the next.
        }
        state.held = false;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn operators_are_served_before_background_work_that_came_first() {
        let slot = Arc::new(LegacySlot::default());
        let held = slot.try_acquire().unwrap().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, (name, priority)) in [
            ("relay-1", Priority::Background),
            ("relay-2", Priority::Background),
            ("operator-1", Priority::Operator),
            ("operator-2", Priority::Operator),
        ]
        .into_iter()
        .enumerate()
        {
            let (waiter, order) = (Arc::clone(&slot), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let permit = waiter.acquire(priority, far()).await.unwrap();
                order.lock().unwrap().push(name);
                drop(permit);
            }));
            // Each is queued before the next arrives.
            let queued = || slot.waiting(Priority::Background) + slot.waiting(Priority::Operator);
            while queued() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["operator-1", "operator-2", "relay-1", "relay-2"]
        );
    }

    #[tokio::test]
    async fn a_waiter_that_times_out_never_keeps_the_slot() {
        let slot = Arc::new(LegacySlot::default());
        let held = slot.try_acquire().unwrap().unwrap();
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(
            slot.acquire(Priority::Operator, soon).await.err(),
            Some(AcquireError::Timeout)
        );
        // A waiter whose future is dropped is skipped too.
        let dropped = slot.acquire(Priority::Operator, far());
        drop(dropped);
        drop(held);
        assert!(slot.try_acquire().unwrap().is_some());
    }

    #[tokio::test]
    async fn close_fails_waiters_and_later_calls() {
        let slot = Arc::new(LegacySlot::default());
        let _held = slot.try_acquire().unwrap().unwrap();
        let waiter = {
            let slot = Arc::clone(&slot);
            tokio::spawn(async move { slot.acquire(Priority::Background, far()).await.err() })
        };
        while slot.waiting(Priority::Background) == 0 {
            tokio::task::yield_now().await;
        }
        slot.close();
        assert_eq!(waiter.await.unwrap(), Some(AcquireError::Closed));
        assert_eq!(slot.try_acquire().err(), Some(AcquireError::Closed));
    }
}
