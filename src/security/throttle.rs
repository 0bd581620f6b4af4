//! Per-address slowdown of failed logins, so that guessing passwords is slow while one bad client
//! cannot stall anyone else's CONNECT.
//!
//! Rule (defaults in [`ThrottlePolicy::default`]): an address may fail 5 times freely. Once it has
//! 5 or more recent failures, each further attempt waits `base_delay * 2^(failures - 5)`, capped
//! at `max_delay`, before its credentials are even looked at. Waiting times are reserved one after
//! the other per address, so opening many connections in parallel does not guess faster: each
//! waits behind the previous one. An attempt that would have to wait longer than `max_backlog` is
//! refused at once without checking its credentials. Failures are forgotten once an address has
//! been quiet (no failure) for `window`. A successful login does not reset the count (otherwise
//! one valid account would let an attacker keep guessing others).
//!
//! Waiting happens in the connection's own task; the shared table is locked only for a few
//! instructions. IPv6 clients are tracked per /64 (one host usually owns a whole /64). The table
//! is bounded: past `max_tracked` addresses, quiet ones are purged, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Tuning of the login throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures an address may have before its attempts are delayed.
    pub free_failures: u32,
    /// Failures are forgotten after this long without a new failure.
    pub window: Duration,
    /// Delay of the first delayed attempt; doubles with each further failure.
    pub base_delay: Duration,
    /// Upper bound of one attempt's delay.
    pub max_delay: Duration,
    /// Attempts that would wait longer than this (parallel attempts queue up) are refused.
    pub max_backlog: Duration,
    /// Addresses remembered at most (memory bound).
    pub max_tracked: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            free_failures: 5,
            window: Duration::from_secs(60),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_backlog: Duration::from_secs(30),
            max_tracked: 10_000,
        }
    }
}

/// What to do with a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the credentials now.
    Now,
    /// Wait this long, then check the credentials.
    After(Duration),
    /// Too many attempts queued from this address: refuse without checking.
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// When the latest admitted delayed attempt from this address may proceed.
    next_slot: Instant,
}

/// The shared failure table. One per broker; it survives configuration reloads.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            records: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Decide about an attempt from `addr` arriving at `now`, reserving its waiting slot.
    pub fn admit(&self, addr: IpAddr, now: Instant) -> Admission {
        let key = throttle_key(addr);
        let mut records = self.records.lock();
        let Some(record) = records.get_mut(&key) else {
            return Admission::Now;
        };
        if now.saturating_duration_since(record.last_failure) > self.policy.window {
            records.remove(&key);
            return Admission::Now;
        }
        if record.failures < self.policy.free_failures {
            return Admission::Now;
        }
        let start = record.next_slot.max(now) + self.delay_after(record.failures);
        let wait = start.saturating_duration_since(now);
        if wait > self.policy.max_backlog {
            return Admission::Refused;
        }
        record.next_slot = start;
        Admission::After(wait)
    }

    /// Would an attempt from `addr` at `now` be refused outright? Like [`LoginThrottle::admit`]
    /// but reserves no waiting slot: for attempts that cannot wait (a re-authentication on a
    /// running connection), so that they do not push back the next CONNECT's slot.
    pub fn would_refuse(&self, addr: IpAddr, now: Instant) -> bool {
        let records = self.records.lock();
        let Some(record) = records.get(&throttle_key(addr)) else {
            return false;
        };
        if now.saturating_duration_since(record.last_failure) > self.policy.window
            || record.failures < self.policy.free_failures
        {
            return false;
        }
        let start = record.next_slot.max(now) + self.delay_after(record.failures);
        start.saturating_duration_since(now) > self.policy.max_backlog
    }

    /// Record a failed attempt from `addr` at `now`.
    pub fn record_failure(&self, addr: IpAddr, now: Instant) {
        let key = throttle_key(addr);
        let mut records = self.records.lock();
        let record = records.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            next_slot: now,
        });
        if now.saturating_duration_since(record.last_failure) > self.policy.window {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if records.len() > self.policy.max_tracked {
            self.shrink(&mut records, now);
        }
    }

    /// Failures currently remembered for `addr` (for logs and tests).
    pub fn failures(&self, addr: IpAddr, now: Instant) -> u32 {
        match self.records.lock().get(&throttle_key(addr)) {
            Some(r) if now.saturating_duration_since(r.last_failure) <= self.policy.window => {
                r.failures
            }
            _ => 0,
        }
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.records.lock().len()
    }

    fn delay_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(self.policy.free_failures).min(20);
        self.policy
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.policy.max_delay)
    }

    /// Drop quiet addresses; if that is not enough, the oldest ones down to 90% of the bound so
    /// that the next insertions do not shrink again immediately.
    fn shrink(&self, records: &mut HashMap<IpAddr, Record>, now: Instant) {
        let window = self.policy.window;
        records.retain(|_, r| now.saturating_duration_since(r.last_failure) <= window);
        let target = self.policy.max_tracked - self.policy.max_tracked / 10;
        if records.len() > target {
            let mut by_age: Vec<(Instant, IpAddr)> =
                records.iter().map(|(k, r)| (r.last_failure, *k)).collect();
            by_age.sort_unstable();
            let excess = records.len() - target;
            for (_, key) in by_age.into_iter().take(excess) {
                records.remove(&key);
            }
        }
    }
}

/// IPv4 addresses as they are (IPv4-mapped IPv6 included); IPv6 reduced to its /64 prefix.
fn throttle_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 2,
            window: Duration::from_secs(60),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            max_backlog: Duration::from_secs(1),
            max_tracked: 10,
        }
    }

    #[test]
    fn delays_grow_after_the_free_failures_and_are_capped() {
        let t = LoginThrottle::new(policy());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let admission = t.admit(ip, now);
            seen.push(admission);
            if let Admission::After(d) = admission {
                now += d;
            }
            t.record_failure(ip, now);
        }
        let ms = |n| Admission::After(Duration::from_millis(n));
        assert_eq!(
            seen,
            vec![
                Admission::Now,
                Admission::Now,
                ms(100),
                ms(200),
                ms(400),
                ms(400)
            ]
        );
    }

    #[test]
    fn parallel_attempts_queue_up_and_overflow_is_refused() {
        let t = LoginThrottle::new(policy());
        let ip: IpAddr = "10.0.0.2".parse().expect("ip");
        let now = Instant::now();
        for _ in 0..4 {
            t.record_failure(ip, now);
        }
        // 4 failures, 2 free: each attempt waits 400 ms behind the previous one.
        assert_eq!(
            t.admit(ip, now),
            Admission::After(Duration::from_millis(400))
        );
        // Asking without waiting reserves nothing.
        assert!(!t.would_refuse(ip, now));
        assert_eq!(
            t.admit(ip, now),
            Admission::After(Duration::from_millis(800))
        );
        assert!(t.would_refuse(ip, now));
        assert_eq!(t.admit(ip, now), Admission::Refused);
        let other: IpAddr = "10.0.0.3".parse().expect("ip");
        assert_eq!(t.admit(other, now), Admission::Now);
    }

    #[test]
    fn quiet_addresses_are_forgiven() {
        let t = LoginThrottle::new(policy());
        let ip: IpAddr = "10.0.0.4".parse().expect("ip");
        let now = Instant::now();
        for _ in 0..5 {
            t.record_failure(ip, now);
        }
        assert_eq!(t.failures(ip, now), 5);
        let later = now + Duration::from_secs(61);
        assert_eq!(t.admit(ip, later), Admission::Now);
        assert_eq!(t.failures(ip, later), 0);
        t.record_failure(ip, later);
        assert_eq!(t.failures(ip, later), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let t = LoginThrottle::new(policy());
        let now = Instant::now();
        for i in 0..100u32 {
            t.record_failure(
                IpAddr::V4(i.into()),
                now + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(t.tracked() <= 10, "tracked {}", t.tracked());
        // The most recent offender is still remembered.
        let last = IpAddr::V4(99u32.into());
        assert_eq!(t.failures(last, now + Duration::from_millis(99)), 1);
    }

    #[test]
    fn ipv6_is_tracked_per_slash_64() {
        let t = LoginThrottle::new(policy());
        let now = Instant::now();
        let a: Ipv6Addr = "2001:db8::1".parse().expect("ip");
        let b: Ipv6Addr = "2001:db8::ffff:2".parse().expect("ip");
        let other: Ipv6Addr = "2001:db8:0:1::1".parse().expect("ip");
        t.record_failure(a.into(), now);
        assert_eq!(t.failures(b.into(), now), 1);
        assert_eq!(t.failures(other.into(), now), 0);
        let mapped: Ipv6Addr = "::ffff:10.0.0.9".parse().expect("ip");
        t.record_failure(mapped.into(), now);
        assert_eq!(t.failures("10.0.0.9".parse().expect("ip"), now), 1);
    }
}
