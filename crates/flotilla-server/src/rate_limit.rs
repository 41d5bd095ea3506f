//! Rate limits per token: each token (the admin's, each agent's) may make `per_second` requests
//! a second on average, `burst` at once; past that a request is answered 429 with
//! `Retry-After`, before it does any work.
//!
//! The limiter is `governor`'s keyed GCRA (one cell per token, no background task, lock-free
//! per key), rather than a bucket written here: it is the well-kept crate for this, and its
//! arithmetic (an exact theoretical arrival time per key) has been right in production for
//! years. Tokens are keyed by their hash, never the secret.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A rate limit: an average rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests a second, on average.
    pub per_second: NonZeroU32,
    /// Requests at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    /// 1,000 a second with bursts of 2,000: far above what an agent or a person needs (an agent
    /// heartbeats every few seconds and long-polls), low enough that one runaway client cannot
    /// take every core.
    fn default() -> Self {
        RateLimit {
            per_second: NonZeroU32::new(1_000).expect("non-zero"),
            burst: NonZeroU32::new(2_000).expect("non-zero"),
        }
    }
}

/// The limiter of every token.
pub struct Limiter {
    cells: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("tokens", &self.cells.len())
            .finish()
    }
}

impl Limiter {
    /// A limiter applying `limit` to each token.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Limiter {
            cells: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request of the token with this hash; `Err` holds how long until the next one
    /// would be allowed.
    pub fn check(&self, token_hash: &str) -> Result<(), Duration> {
        self.cells
            .check_key(&token_hash.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets tokens that are back to a full burst (called now and then, so that the cells of
    /// agents long gone do not pile up).
    pub fn forget_idle(&self) {
        self.cells.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_past_its_burst_waits_and_others_do_not() {
        let limiter = Limiter::new(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            limiter.check("b").is_ok(),
            "each token has its own allowance"
        );
    }
}
