//! What one client may take: queries per second (a token bucket per client prefix, in a
//! fixed table), and slots (TCP connections, forwarded queries in flight) counted in total
//! and per client. Memory is bounded whatever the number of sources, and each query costs
//! O(1) under one small lock: no map grows with the sources, nothing is ever scanned.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;

use crate::config::RateLimit;

/// The client a limit counts: its address cut to the configured prefix (IPv4 /32 and
/// IPv6 /64 by default; an IPv6 host picks any address in its /64 at will). IPv4-mapped
/// IPv6 addresses count as IPv4.
pub fn client_key(ip: IpAddr, limit: Option<RateLimit>) -> IpNet {
    let (v4, v6) = limit.map_or((32, 64), |l| (l.ipv4_prefix, l.ipv6_prefix));
    let ip = ip.to_canonical();
    let len = if ip.is_ipv4() { v4 } else { v6 };
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

/// Buckets the table holds: 16,384 sets of 4, about 2 MiB, whatever the sources.
const SETS: usize = 16_384;
const WAYS: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    key: Option<IpNet>,
    tokens: f64,
    /// Milliseconds since the limiter started, at the last query.
    last_ms: u64,
}

/// Per-client token buckets in a fixed set-associative table keyed by a SipHash with a
/// random key (clients cannot aim at one set). A client not in its set takes a slot that
/// is free or whose bucket has refilled (an idle client: forgetting it changes nothing),
/// else the least recently used one. Under a flood of sources a well-behaved client may be
/// forgotten and start again with a full bucket: that is generous, never unfair to it.
#[derive(Debug)]
pub struct RateLimiter {
    sets: Box<[Mutex<[Bucket; WAYS]>]>,
    hasher: RandomState,
    epoch: Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            sets: (0..SETS)
                .map(|_| Mutex::new([Bucket::default(); WAYS]))
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }
}

impl RateLimiter {
    /// Charge one query to `client` (see [`client_key`]); `false`: over its limit.
    pub fn admit(&self, client: IpNet, limit: RateLimit, now: Instant) -> bool {
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let burst = f64::from(limit.burst);
        let rate = f64::from(limit.queries_per_second) / 1000.0;
        let set = self.hasher.hash_one(client) as usize % SETS;
        let mut ways = self.sets[set].lock().unwrap_or_else(|e| e.into_inner());
        let refilled =
            |b: &Bucket| (b.tokens + (now_ms.saturating_sub(b.last_ms)) as f64 * rate).min(burst);
        let i = match ways.iter().position(|b| b.key == Some(client)) {
            Some(i) => i,
            None => {
                let i = ways
                    .iter()
                    .position(|b| b.key.is_none() || refilled(b) >= burst)
                    .unwrap_or_else(|| (0..WAYS).min_by_key(|&i| ways[i].last_ms).unwrap_or(0));
                ways[i] = Bucket {
                    key: Some(client),
                    tokens: burst,
                    last_ms: now_ms,
                };
                i
            }
        };
        let b = &mut ways[i];
        b.tokens = refilled(b);
        b.last_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a slot was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every slot is taken.
    Total,
    /// This client holds its share.
    Client,
}

impl Full {
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Client => "per_client",
        }
    }
}

/// Slots counted in total and per client (TCP connections, forwarded queries in flight).
/// A client appears in the map only while it holds a slot, so the map is bounded by the
/// total.
#[derive(Debug, Default)]
pub struct Slots {
    held: Mutex<(usize, HashMap<IpNet, usize>)>,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    client: IpNet,
}

impl Slots {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Take a slot for `client` if fewer than `total` are held and the client holds fewer
    /// than `per_client` (limits are passed in, so a reload applies to the next one).
    pub fn take(
        self: &Arc<Self>,
        client: IpNet,
        total: usize,
        per_client: usize,
    ) -> Result<Slot, Full> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 >= total {
            return Err(Full::Total);
        }
        let mine = held.1.entry(client).or_default();
        if *mine >= per_client {
            return Err(Full::Client);
        }
        *mine += 1;
        held.0 += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }

    /// Slots held in total.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(qps: u32, burst: u32) -> RateLimit {
        RateLimit {
            queries_per_second: qps,
            burst,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    fn key(s: &str) -> IpNet {
        client_key(s.parse().unwrap(), Some(limit(1, 1)))
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        let wide = RateLimit {
            ipv4_prefix: 24,
            ..limit(1, 1)
        };
        let k = |s: &str| client_key(s.parse().unwrap(), Some(wide));
        assert_eq!(k("192.0.2.1"), k("192.0.2.200"));
    }

    #[test]
    fn a_client_over_its_rate_is_limited_and_refills() {
        let r = RateLimiter::default();
        let now = Instant::now();
        let l = limit(10, 5);
        let c = key("192.0.2.1");
        assert_eq!((0..10).filter(|_| r.admit(c, l, now)).count(), 5);
        assert!(r.admit(key("192.0.2.2"), l, now), "others are not affected");
        assert!(r.admit(c, l, now + Duration::from_millis(150)));
    }

    #[test]
    fn memory_stays_fixed_and_a_steady_client_keeps_its_limit_under_a_flood_of_sources() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        let l = limit(100, 100);
        let steady = key("198.51.100.7");
        let mut limited = 0;
        // 300,000 distinct sources, one query each, and a client asking 1,000 times in a
        // second against a limit of 100/s with bursts of 100.
        for i in 0u32..300_000 {
            let now = t0 + Duration::from_micros(u64::from(i) * 3);
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 | i));
            r.admit(client_key(src, Some(l)), l, now);
            if i % 300 == 0 && !r.admit(steady, l, now) {
                limited += 1;
            }
        }
        // Never limited below its rate (about 1,000 - (100 burst + 90 refilled)
        // refusals), and the flood does not make it forget its bucket: still limited.
        assert!((700..=820).contains(&limited), "{limited}");
    }

    #[test]
    fn slots_are_bounded_in_total_and_per_client_and_given_back_on_drop() {
        let s = Slots::new();
        let (a, b) = (key("192.0.2.1"), key("192.0.2.2"));
        let a1 = s.take(a, 3, 2).unwrap();
        let _a2 = s.take(a, 3, 2).unwrap();
        assert_eq!(s.take(a, 3, 2).unwrap_err(), Full::Client);
        let _b1 = s.take(b, 3, 2).unwrap();
        assert_eq!(s.take(b, 3, 2).unwrap_err(), Full::Total);
        drop(a1);
        let _b2 = s.take(b, 3, 2).unwrap();
        assert_eq!(s.held(), 3);
    }
}
