//! One replica's share of one limit key: tokens reserved from Redis ahead of the requests
//! that spend them, so that most requests are decided here without a round trip.
//!
//! A reservation asks for what the key's requests used in about `reserve_ahead` (at least
//! one, at most a tenth of the limit, at most twice the requests seen since the last one),
//! and the next is asked for in the background once half of the last is spent. Only a
//! request that finds the pool empty (the key's first here, or a burst past the
//! reservation) waits for Redis. Tokens not spent within one window are dropped, and a
//! refusal from Redis is remembered until the time Redis said one more request fits (at
//! least `reserve_ahead`), so refused requests cost no round trip either.
//!
//! Accuracy: Redis grants each window's tokens once, so the fleet admits what Redis
//! granted less what replicas hold unspent; that difference is at most what is reserved at
//! one time, about `reserve_ahead` of the fleet's admitted traffic plus one token per
//! replica (README, "Fleet-wide rate limits").

use std::time::{Duration, Instant};

/// How large reservations are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub reserve_ahead: Duration,
    /// The most one reservation asks for.
    pub cap: u32,
    /// How long reserved tokens stay good (the limit's window).
    pub lifetime: Duration,
}

impl Sizing {
    /// Reservations for a limit of `requests` per `window`.
    pub fn new(requests: u32, window: Duration, reserve_ahead: Duration) -> Self {
        Self {
            reserve_ahead,
            cap: (requests / 10).max(1),
            lifetime: window,
        }
    }
}

/// What a request does with the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A token was spent: admitted. `Some(n)`: reserve `n` more in the background.
    Admitted { reserve: Option<u32> },
    /// Redis said no more fit until `wait` from now.
    Limited { wait: Duration },
    /// Nothing left here. `Some(n)`: reserve `n` and wait for it; `None`: a reservation is
    /// already under way, wait for it.
    Empty { reserve: Option<u32> },
}

/// The tokens one replica holds for one key.
#[derive(Debug)]
pub struct Pool {
    tokens: u32,
    /// The held tokens are void from then.
    expires: Instant,
    /// Redis refused until then.
    refused_until: Option<Instant>,
    /// A reservation is under way.
    reserving: bool,
    /// The size of the last reservation asked for.
    last_asked: u32,
    /// Requests since `since` (admitted or waiting), to size the next reservation.
    demand: u32,
    since: Instant,
    /// Requests waiting for a reservation now: the next one asks for at least them all.
    blocked: u32,
}

impl Pool {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: 0,
            expires: now,
            refused_until: None,
            reserving: false,
            last_asked: 0,
            demand: 0,
            since: now,
            blocked: 0,
        }
    }

    /// A request starts waiting for a reservation.
    pub fn wait_begins(&mut self) {
        self.blocked = self.blocked.saturating_add(1);
    }

    /// A request stops waiting (served, refused or given up).
    pub fn wait_ends(&mut self) {
        self.blocked = self.blocked.saturating_sub(1);
    }

    /// A request for a token at `now`.
    pub fn take(&mut self, now: Instant, sizing: &Sizing) -> Take {
        if now >= self.expires {
            self.tokens = 0;
        }
        // Tokens held are spent even after a refusal: Redis counted them when it granted
        // them, so leaving them would admit fewer than the limit.
        let refused = self.refused_until.filter(|until| now < *until);
        if self.tokens == 0 {
            if let Some(until) = refused {
                return Take::Limited { wait: until - now };
            }
            self.refused_until = None;
            self.demand = self.demand.saturating_add(1);
            return Take::Empty {
                reserve: self.start(now, sizing),
            };
        }
        self.demand = self.demand.saturating_add(1);
        self.tokens -= 1;
        let low = self.tokens.saturating_mul(2) <= self.last_asked;
        let reserve = if low && refused.is_none() {
            self.start(now, sizing)
        } else {
            None
        };
        Take::Admitted { reserve }
    }

    /// A reservation under way ended: `granted` tokens, and when Redis granted none, how
    /// long until one more request fits.
    pub fn granted(&mut self, now: Instant, granted: u32, wait: Duration, sizing: &Sizing) {
        self.reserving = false;
        if granted == 0 {
            // A sliding window frees capacity continuously, so "one more fits" is often a
            // fraction of a millisecond away under load; holding the refusal at least
            // `reserve_ahead` keeps a flood from costing a Redis call per freed token, while
            // the capacity freed meanwhile goes to the next replica that asks.
            let hold = sizing.reserve_ahead.min(sizing.lifetime);
            self.refused_until = Some(now + wait.max(hold));
            return;
        }
        if now >= self.expires {
            self.tokens = 0;
        }
        self.tokens = self.tokens.saturating_add(granted);
        self.expires = now + sizing.lifetime;
    }

    /// A reservation under way failed (Redis unreachable, slow, or the breaker open).
    pub fn failed(&mut self) {
        self.reserving = false;
    }

    /// Whether the pool holds nothing worth keeping at `now` (it may be forgotten).
    pub fn idle(&self, now: Instant) -> bool {
        !self.reserving
            && self.blocked == 0
            && (self.tokens == 0 || now >= self.expires)
            && self.refused_until.is_none_or(|until| now >= until)
    }

    /// Starts a reservation unless one is under way: how many tokens to ask for.
    fn start(&mut self, now: Instant, sizing: &Sizing) -> Option<u32> {
        if self.reserving {
            return None;
        }
        let elapsed = now
            .saturating_duration_since(self.since)
            .max(Duration::from_millis(1));
        let rate = f64::from(self.demand) / elapsed.as_secs_f64();
        let wanted = (rate * sizing.reserve_ahead.as_secs_f64()).ceil() as u32;
        // Requests already waiting are asked for beyond the cap: a burst of a key's first
        // requests is served by one round trip rather than one per tenth of the limit.
        let asked = wanted
            .min(self.demand.saturating_mul(2))
            .min(sizing.cap)
            .max(self.blocked.saturating_add(1));
        self.reserving = true;
        self.last_asked = asked;
        self.demand = 0;
        self.since = now;
        Some(asked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizing() -> Sizing {
        Sizing::new(1000, Duration::from_secs(1), Duration::from_millis(20))
    }

    #[test]
    fn the_first_request_waits_for_two_tokens_and_the_second_spends_the_spare() {
        let now = Instant::now();
        let s = sizing();
        let mut pool = Pool::new(now);
        assert_eq!(pool.take(now, &s), Take::Empty { reserve: Some(2) });
        assert_eq!(pool.take(now, &s), Take::Empty { reserve: None });
        pool.granted(now, 2, Duration::ZERO, &s);
        // The waiting request takes one; half of the reservation is spent, so the next
        // is asked for in the background.
        assert!(matches!(
            pool.take(now, &s),
            Take::Admitted { reserve: Some(_) }
        ));
        assert_eq!(pool.take(now, &s), Take::Admitted { reserve: None });
        assert_eq!(pool.take(now, &s), Take::Empty { reserve: None });
    }

    #[test]
    fn a_steady_rate_reserves_about_reserve_ahead_of_it() {
        let s = sizing();
        let start = Instant::now();
        let mut pool = Pool::new(start);
        let mut now = start;
        let mut asked = Vec::new();
        // 2,000 requests a second for a second: a request every 500 µs.
        for _ in 0..2000 {
            now += Duration::from_micros(500);
            let reserve = match pool.take(now, &s) {
                Take::Admitted { reserve } | Take::Empty { reserve } => reserve,
                Take::Limited { .. } => panic!("nothing refused"),
            };
            if let Some(n) = reserve {
                asked.push(n);
                pool.granted(now, n, Duration::ZERO, &s);
            }
        }
        // 2,000/s × 20 ms = 40 tokens at a time, after the ramp from 2.
        let steady = &asked[asked.len() / 2..];
        assert!(steady.iter().all(|n| (30..=50).contains(n)), "{asked:?}");
        assert!(asked.len() < 200, "{} reservations", asked.len());
    }

    #[test]
    fn a_refusal_is_remembered_until_redis_said() {
        let now = Instant::now();
        let s = sizing();
        let mut pool = Pool::new(now);
        assert!(matches!(
            pool.take(now, &s),
            Take::Empty { reserve: Some(_) }
        ));
        pool.granted(now, 0, Duration::from_millis(300), &s);
        let wait = Duration::from_millis(200);
        assert_eq!(
            pool.take(now + Duration::from_millis(100), &s),
            Take::Limited { wait }
        );
        assert!(!pool.idle(now));
        let later = now + Duration::from_millis(300);
        assert!(matches!(
            pool.take(later, &s),
            Take::Empty { reserve: Some(_) }
        ));
    }

    #[test]
    fn a_reservation_asks_for_every_request_waiting() {
        let now = Instant::now();
        let s = Sizing::new(100, Duration::from_secs(1), Duration::from_millis(20));
        let mut pool = Pool::new(now);
        for _ in 0..30 {
            pool.wait_begins();
        }
        assert_eq!(pool.take(now, &s), Take::Empty { reserve: Some(31) });
        assert!(!pool.idle(now));
        pool.failed();
        for _ in 0..30 {
            pool.wait_ends();
        }
        assert!(pool.idle(now));
    }

    #[test]
    fn a_refusal_is_held_at_least_reserve_ahead() {
        let now = Instant::now();
        let s = sizing();
        let mut pool = Pool::new(now);
        pool.take(now, &s);
        pool.granted(now, 0, Duration::from_micros(300), &s);
        let wait = Duration::from_millis(20);
        assert_eq!(pool.take(now, &s), Take::Limited { wait });
    }

    #[test]
    fn tokens_held_are_spent_after_a_refusal() {
        let now = Instant::now();
        let s = sizing();
        let mut pool = Pool::new(now);
        pool.take(now, &s);
        pool.granted(now, 4, Duration::ZERO, &s);
        // The first reservation asked for 2: the next starts once at most 1 is left.
        assert_eq!(pool.take(now, &s), Take::Admitted { reserve: None });
        assert_eq!(pool.take(now, &s), Take::Admitted { reserve: None });
        assert!(matches!(
            pool.take(now, &s),
            Take::Admitted { reserve: Some(_) }
        ));
        pool.granted(now, 0, Duration::from_secs(5), &s);
        for _ in 0..1 {
            assert_eq!(pool.take(now, &s), Take::Admitted { reserve: None });
        }
        assert_eq!(
            pool.take(now, &s),
            Take::Limited {
                wait: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn tokens_are_void_after_a_window_and_a_failure_frees_the_next_reservation() {
        let now = Instant::now();
        let s = sizing();
        let mut pool = Pool::new(now);
        pool.take(now, &s);
        pool.granted(now, 5, Duration::ZERO, &s);
        let later = now + Duration::from_secs(1);
        assert!(pool.idle(later));
        assert!(matches!(
            pool.take(later, &s),
            Take::Empty { reserve: Some(_) }
        ));
        pool.failed();
        assert!(matches!(
            pool.take(later, &s),
            Take::Empty { reserve: Some(_) }
        ));
    }

    #[test]
    fn reservations_stay_within_a_tenth_of_the_limit() {
        let s = Sizing::new(50, Duration::from_secs(1), Duration::from_secs(10));
        let now = Instant::now();
        let mut pool = Pool::new(now);
        for _ in 0..100 {
            pool.take(now, &s);
        }
        pool.failed();
        assert_eq!(pool.take(now, &s), Take::Empty { reserve: Some(5) });
    }
}
