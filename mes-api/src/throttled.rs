//! A value that is read again at most once per period, however often it is asked
//! for: `/metrics` and `/health/ready` need no key, so their database reads must not
//! grow with the request rate.

use std::future::Future;
use std::time::Duration;

use rocket::tokio::sync::Mutex;
use rocket::tokio::time::Instant;

/// The last value read and when. Concurrent askers during a read wait for it and
/// share its result (one read, not one each).
#[derive(Debug)]
pub struct Throttled<T> {
    every: Duration,
    last: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Throttled<T> {
    /// A value read again at most once per `every`.
    pub fn new(every: Duration) -> Throttled<T> {
        Throttled {
            every,
            last: Mutex::new(None),
        }
    }

    /// The value read less than `every` ago, or a new one from `read`. A failed read
    /// is a value too (e.g. `None`), kept as long as any other.
    pub async fn get<F, Fut>(&self, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, value)) = last.as_ref()
            && at.elapsed() < self.every
        {
            return value.clone();
        }
        let value = read().await;
        *last = Some((Instant::now(), value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn many_askers_share_one_read_per_period() {
        let throttled = Arc::new(Throttled::new(Duration::from_secs(1)));
        let reads = Arc::new(AtomicUsize::new(0));
        let ask = |throttled: Arc<Throttled<usize>>, reads: Arc<AtomicUsize>| async move {
            throttled
                .get(|| async {
                    // A slow read: the others ask meanwhile.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    reads.fetch_add(1, Ordering::SeqCst) + 1
                })
                .await
        };
        let askers: Vec<_> = (0..100)
            .map(|_| tokio::spawn(ask(throttled.clone(), reads.clone())))
            .collect();
        for asker in askers {
            assert_eq!(asker.await.ok(), Some(1), "every asker got the one read");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            ask(throttled.clone(), reads.clone()).await,
            1,
            "still fresh"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(ask(throttled.clone(), reads.clone()).await, 2, "read again");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
