//! Rate limits that keep one caller from costing everyone else: per operator on the
//! routes that send to the chain, and per client address on failed sign-ins.
//!
//! Both are GCRA limiters from `governor` (a bucket that refills steadily, so a burst
//! is allowed and a flood is not):
//!
//! - **Chain calls** (`MES_RATE_LIMIT_PER_SEC`, default 20 a second per operator,
//!   bursts of as many): every LIST and answer goes to the chain, and behind a legacy
//!   gateway through one slot, so a viewer's script must not be able to flood it. Over
//!   the limit: 429 `rate_limited` with `Retry-After`, and nothing is sent.
//! - **Failed sign-ins** (`MES_AUTH_FAILURES_PER_MIN`, default 20 unknown keys or
//!   ended sessions from one address a minute, in bursts of as many): after that the
//!   address gets 429 instead of 401, and until it may try again its unknown keys are refused
//!   without asking the database. A key that is already verified (cached) still
//!   works from there, so colleagues behind the same NAT who are signed in go on.
//!
//! Memory stays bounded: limiter state is dropped once it is indistinguishable from
//! a fresh key's, and when more than [`MAX_TRACKED`] addresses are tracked.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::error::{ApiError, ErrorCode};

/// Most addresses (or operators) whose limiter state is kept; past that the idle ones
/// are dropped.
pub const MAX_TRACKED: usize = 10_000;

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The server's rate limits; one per process (limits are per instance).
pub struct Limits<C: Clock = DefaultClock> {
    clock: C,
    chain: Keyed<i64, C>,
    auth_failures: Keyed<IpAddr, C>,
    /// Addresses that used up their failed sign-ins, with when they may try again.
    blocked: Mutex<HashMap<IpAddr, C::Instant>>,
}

impl<C: Clock> std::fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits<DefaultClock> {
    /// Limits with `chain_per_sec` chain calls a second per operator and
    /// `failures_per_min` failed sign-ins a minute per address.
    pub fn new(chain_per_sec: NonZeroU32, failures_per_min: NonZeroU32) -> Limits {
        Limits::with_clock(chain_per_sec, failures_per_min, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Limits that read the time from `clock` (a fake one in tests).
    pub fn with_clock(
        chain_per_sec: NonZeroU32,
        failures_per_min: NonZeroU32,
        clock: C,
    ) -> Limits<C> {
        Limits {
            chain: RateLimiter::dashmap_with_clock(Quota::per_second(chain_per_sec), clock.clone()),
            auth_failures: RateLimiter::dashmap_with_clock(
                Quota::per_minute(failures_per_min),
                clock.clone(),
            ),
            blocked: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Lets operator `operator` make one more chain call, or answers 429 with how
    /// long to wait.
    pub fn chain_call(&self, operator: i64) -> Result<(), ApiError> {
        check(&self.chain, &self.clock, &operator).map_err(|wait| {
            ApiError::new(
                ErrorCode::RateLimited,
                "too many chain calls with this key (MES_RATE_LIMIT_PER_SEC); try again shortly",
            )
            .retry_after(wait)
        })
    }

    /// How long `address` must wait before it may present an unknown key again, if
    /// it used up its failed sign-ins.
    pub fn blocked(&self, address: IpAddr) -> Option<Duration> {
        let now = self.clock.now();
        let blocked = self.blocked.lock().ok()?;
        let until = *blocked.get(&address)?;
        (until > now).then(|| until.duration_since(now).into())
    }

    /// Counts a failed sign-in from `address`; `Some(wait)` when that was one too
    /// many (answer 429, not 401).
    pub fn failed_sign_in(&self, address: IpAddr) -> Option<Duration> {
        let wait = check(&self.auth_failures, &self.clock, &address).err()?;
        let now = self.clock.now();
        if let Ok(mut blocked) = self.blocked.lock() {
            if blocked.len() >= MAX_TRACKED {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < MAX_TRACKED {
                blocked.insert(address, now + wait.into());
            }
        }
        Some(wait)
    }
}

/// One more cell for `key`, or how long until there is one. Keeps the limiter's map
/// bounded.
fn check<K: Hash + Eq + Clone, C: Clock>(
    limiter: &Keyed<K, C>,
    clock: &C,
    key: &K,
) -> Result<(), Duration> {
    if limiter.len() >= MAX_TRACKED {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(clock.now()))
}

/// 429 for an address that used up its failed sign-ins.
pub fn too_many_failures(wait: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many unknown keys from this address; try again later",
    )
    .retry_after(wait)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    /// 20 failed sign-ins a minute: one more every 3 s.
    const FAILURES: u32 = 20;
    const REFILL: Duration = Duration::from_secs(3);

    fn limits(per_sec: u32) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let failures = NonZeroU32::new(FAILURES).unwrap_or(NonZeroU32::MIN);
        (Limits::with_clock(per_sec, failures, clock.clone()), clock)
    }

    #[test]
    fn chain_calls_are_limited_per_operator_and_refill() {
        let (limits, clock) = limits(20);
        for n in 0..20 {
            assert!(limits.chain_call(1).is_ok(), "call {n} of the burst");
        }
        let refused = limits.chain_call(1).err();
        let refused = refused.as_ref();
        assert_eq!(
            refused.map(|e| e.status),
            Some(rocket::http::Status::TooManyRequests)
        );
        assert_eq!(refused.map(|e| e.code), Some(ErrorCode::RateLimited));
        // One call refills every 50 ms; the header rounds up to whole seconds.
        assert_eq!(refused.and_then(|e| e.retry_after), Some(1));
        assert!(
            limits.chain_call(2).is_ok(),
            "another operator is not limited"
        );
        clock.advance(Duration::from_millis(50));
        assert!(limits.chain_call(1).is_ok(), "one call refilled");
        assert!(limits.chain_call(1).is_err());
    }

    #[test]
    fn failed_sign_ins_block_an_address_until_it_may_try_again() {
        let (limits, clock) = limits(20);
        let address: IpAddr = [192, 0, 2, 7].into();
        let other: IpAddr = [192, 0, 2, 8].into();
        for n in 0..FAILURES {
            assert_eq!(limits.failed_sign_in(address), None, "failure {n}");
            assert_eq!(limits.blocked(address), None);
        }
        let wait = limits.failed_sign_in(address);
        assert_eq!(wait, Some(REFILL));
        assert_eq!(limits.blocked(address), Some(REFILL));
        assert_eq!(limits.blocked(other), None, "only that address");
        clock.advance(REFILL);
        assert_eq!(limits.blocked(address), None, "it may try again");
        assert_eq!(
            limits.failed_sign_in(address),
            None,
            "one more try refilled"
        );
        assert!(limits.failed_sign_in(address).is_some());
    }

    #[test]
    fn tracked_addresses_stay_bounded() {
        let (limits, clock) = limits(20);
        for n in 0..(MAX_TRACKED as u32 + 100) {
            let address: IpAddr = std::net::Ipv4Addr::from(n).into();
            assert_eq!(limits.failed_sign_in(address), None);
            if n % 1000 == 0 {
                // Older addresses become indistinguishable from fresh ones.
                clock.advance(REFILL * FAILURES);
            }
        }
        assert!(
            limits.auth_failures.len() <= MAX_TRACKED,
            "{}",
            limits.auth_failures.len()
        );
    }
}
