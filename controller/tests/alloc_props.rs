//! Property tests of the allocator over random sequences of pool edits, Service
//! creates/updates/deletes, Services that vanish for a while and come back with their status
//! (a file moved in two steps, a truncated read, a watch re-list) and controller restarts or
//! a second replica taking over (reconciling in any order).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use leafbridge_api::crd::{IPPoolSpec, ServiceAllocation};
use leafbridge_controller::alloc::{Allocator, Family, FamilyPolicy, ServiceRequest, SvcKey};
use proptest::prelude::*;

const POOL_CHOICES: &[(&str, &[&str])] = &[
    ("a", &["203.0.113.0-203.0.113.3"]),
    (
        "a",
        &["203.0.113.2-203.0.113.6", "2001:db8::10-2001:db8::12"],
    ),
    ("b", &["203.0.113.8/30"]),
    ("b", &["2001:db8::/126"]),
    ("c", &["100.64.0.254-100.64.1.1", "2001:db8:1::/64"]),
    ("d", &["203.0.113.0/29"]), // overlaps a and b: not used while they exist
];

#[derive(Debug, Clone)]
enum Op {
    SetPools(Vec<(usize, bool, bool, Option<i32>)>),
    Upsert {
        svc: usize,
        policy: u8,
        v6_first: bool,
        request: Option<u8>,
        pool: Option<u8>,
    },
    Delete(usize),
    /// The watch loses the Service for a while (a truncated read, the first half of a move
    /// between files): the controller releases it; its status stays as written.
    Vanish(usize),
    /// It comes back, with the status it had.
    Reappear(usize),
    /// A restart or another replica taking over: the table rebuilt from status, then every
    /// Service reconciled in an order given by the seed.
    Restart(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => prop::collection::vec((0..POOL_CHOICES.len(), any::<bool>(), any::<bool>(), prop::option::of(0..3i32)), 0..4)
            .prop_map(Op::SetPools),
        6 => (0..10usize, 0..3u8, any::<bool>(), prop::option::of(0..8u8), prop::option::of(0..4u8))
            .prop_map(|(svc, policy, v6_first, request, pool)| Op::Upsert { svc, policy, v6_first, request, pool }),
        2 => (0..10usize).prop_map(Op::Delete),
        1 => (0..10usize).prop_map(Op::Vanish),
        1 => (0..10usize).prop_map(Op::Reappear),
        1 => any::<u64>().prop_map(Op::Restart),
    ]
}

fn pools_from(choice: &[(usize, bool, bool, Option<i32>)]) -> BTreeMap<String, IPPoolSpec> {
    let mut out = BTreeMap::new();
    for &(i, auto, buggy, prio) in choice {
        let (name, addrs) = POOL_CHOICES[i];
        out.insert(
            name.to_string(),
            IPPoolSpec {
                addresses: addrs.iter().map(|s| s.to_string()).collect(),
                auto_assign: auto || i % 2 == 0,
                avoid_buggy_ips: buggy,
                service_allocation: prio.map(|p| ServiceAllocation {
                    priority: Some(p),
                    ..Default::default()
                }),
            },
        );
    }
    out
}

/// Sharing-relevant fields are fixed per Service (derived from its index) so that edits cannot
/// make an existing, valid sharing invalid behind the allocator's back.
fn request(
    svc: usize,
    policy: u8,
    v6_first: bool,
    request: Option<u8>,
    pool: Option<u8>,
) -> ServiceRequest {
    let requested = match request {
        Some(r) if r < 4 => vec![format!("203.0.113.{r}").parse().unwrap()],
        Some(r) if r < 6 => vec![format!("2001:db8::{}", r + 12).parse().unwrap()],
        Some(r) => vec![
            format!("203.0.113.{}", r + 1).parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ],
        None => vec![],
    };
    ServiceRequest {
        key: ("ns".into(), format!("s{svc}")),
        ip_families: if v6_first {
            vec![Family::IPv6, Family::IPv4]
        } else {
            vec![Family::IPv4, Family::IPv6]
        },
        policy: match policy {
            0 => FamilyPolicy::SingleStack,
            1 => FamilyPolicy::PreferDualStack,
            _ => FamilyPolicy::RequireDualStack,
        },
        requested,
        pool: pool.map(|p| ["a", "b", "c", "d"][p as usize].to_string()),
        sharing_key: if svc.is_multiple_of(3) {
            None
        } else {
            Some(format!("k{}", svc % 3))
        },
        ports: vec![(
            if svc.is_multiple_of(2) { "TCP" } else { "UDP" }.into(),
            80 + (svc % 4) as i32,
        )],
        local_traffic: svc.is_multiple_of(5),
        selector: BTreeMap::from([("app".into(), format!("a{}", svc % 2))]),
        ..Default::default()
    }
}

fn table(a: &Allocator) -> BTreeMap<SvcKey, Vec<IpAddr>> {
    leafbridge_controller::reconcile::table(a)
}

fn check_sharing(
    a: &Allocator,
    reqs: &BTreeMap<SvcKey, ServiceRequest>,
) -> Result<(), TestCaseError> {
    let mut holders: BTreeMap<IpAddr, Vec<&SvcKey>> = BTreeMap::new();
    for (k, v) in a.services() {
        for ip in &v.ips {
            holders.entry(*ip).or_default().push(k);
        }
    }
    for (ip, hs) in holders {
        for (i, x) in hs.iter().enumerate() {
            for y in &hs[i + 1..] {
                let (rx, ry) = (&reqs[*x], &reqs[*y]);
                prop_assert!(
                    rx.sharing_key.is_some() && rx.sharing_key == ry.sharing_key,
                    "{ip} given to {x:?} and {y:?}"
                );
                prop_assert!(
                    rx.ports.iter().all(|p| !ry.ports.contains(p)),
                    "{ip}: port collision {x:?} {y:?}"
                );
                prop_assert_eq!(
                    rx.local_traffic,
                    ry.local_traffic,
                    "{}: a Local and a Cluster Service share",
                    ip
                );
                if rx.local_traffic {
                    prop_assert_eq!(
                        &rx.selector,
                        &ry.selector,
                        "{}: Local with different selectors",
                        ip
                    );
                }
            }
        }
    }
    Ok(())
}

/// One reconcile of `r` with the status it has, as the controller does it; checks what any
/// reconcile must satisfy. `must_keep`: the Service's request did not change since it was last
/// granted, so whatever it holds must stay.
fn reconcile(
    a: &mut Allocator,
    r: &ServiceRequest,
    status: &mut BTreeMap<SvcKey, Vec<IpAddr>>,
    settled: &mut BTreeSet<SvcKey>,
    must_keep: bool,
    what: &str,
) -> Result<(), TestCaseError> {
    let mut r = r.clone();
    r.status = status.get(&r.key).cloned().unwrap_or_default();
    let in_table = a.get(&r.key).map(|x| x.ips.clone());
    let held = in_table.clone().unwrap_or_else(|| r.status.clone());
    match a.ensure_detailed(&r) {
        Ok(g) => {
            let ips = &g.ips;
            let fams: Vec<Family> = ips.iter().map(Family::of).collect();
            prop_assert!(!ips.is_empty());
            prop_assert!(
                fams.len() < 2 || fams[0] != fams[1],
                "two addresses of one family"
            );
            match r.policy {
                FamilyPolicy::SingleStack => prop_assert_eq!(ips.len(), 1),
                FamilyPolicy::RequireDualStack => prop_assert_eq!(ips.len(), 2),
                FamilyPolicy::PreferDualStack => {}
            }
            for ip in ips {
                prop_assert!(
                    held.contains(ip) || a.pool_of(ip).is_some(),
                    "{} given outside every pool",
                    ip
                );
                let kept = g.kept.iter().any(|(k, _)| k == ip);
                prop_assert!(!kept || held.contains(ip), "{} kept but not held", ip);
                if let Some(req_ip) = r.requested.iter().find(|q| Family::of(q) == Family::of(ip))
                    && !kept
                {
                    prop_assert_eq!(req_ip, ip, "requested address not honoured");
                }
            }
            if must_keep {
                // PreferDualStack may gain the other family; what it had stays.
                prop_assert!(
                    held.iter().all(|ip| ips.contains(ip)),
                    "{} moved a Service: {:?} -> {:?}",
                    what,
                    held,
                    ips
                );
            }
            // Kept addresses are not what was asked: the Service moves once it can get that.
            if g.kept.is_empty() {
                settled.insert(r.key.clone());
            } else {
                settled.remove(&r.key);
            }
            status.insert(r.key.clone(), g.ips);
        }
        Err(_) => {
            settled.remove(&r.key);
            let now = a.get(&r.key).map(|x| x.ips.clone());
            match &in_table {
                Some(_) => {
                    prop_assert_eq!(now, in_table, "a failed request changed the allocation")
                }
                // Adopted from status: only what status shows may be recorded.
                None => prop_assert!(
                    now.iter().flatten().all(|ip| r.status.contains(ip)),
                    "a failed request recorded {:?}, status {:?}",
                    now,
                    r.status
                ),
            }
        }
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<BTreeMap<SvcKey, Vec<IpAddr>>, TestCaseError> {
    let mut a = Allocator::new();
    let mut pools = BTreeMap::new();
    let mut reqs: BTreeMap<SvcKey, ServiceRequest> = BTreeMap::new();
    // What was written to Service status: the only thing a restart can see.
    let mut status: BTreeMap<SvcKey, Vec<IpAddr>> = BTreeMap::new();
    // Services whose current request was granted: only these must never move. (A Service whose
    // last edit failed, e.g. asked for a pool that did not exist yet, moves when it can.)
    let mut settled: BTreeSet<SvcKey> = Default::default();
    // Services the watch lost for a while (they still exist, with their status).
    let mut absent: BTreeSet<SvcKey> = Default::default();
    for op in ops {
        match op {
            Op::SetPools(c) => {
                let before = table(&a);
                pools = pools_from(c);
                a.set_pools(pools.iter().map(|(k, v)| (k.as_str(), v)));
                prop_assert_eq!(&table(&a), &before, "a pool edit moved a Service");
                // Re-reconcile everyone, as the controller does after a pool edit.
                for r in reqs.values().filter(|r| !absent.contains(&r.key)) {
                    // A Service that asks for a pool its address is not in (the pool did not
                    // exist when it asked, or its address's pool went away) moves once that
                    // pool can serve it: what it asked for is acted on.
                    let in_asked_pool = |ips: &Vec<IpAddr>| {
                        r.pool
                            .as_deref()
                            .is_none_or(|p| ips.iter().all(|ip| a.pool_of(ip) == Some(p)))
                    };
                    let keep =
                        settled.contains(&r.key) && before.get(&r.key).is_some_and(in_asked_pool);
                    reconcile(&mut a, r, &mut status, &mut settled, keep, "a pool edit")?;
                }
            }
            Op::Upsert {
                svc,
                policy,
                v6_first,
                request: rq,
                pool,
            } => {
                let r = request(*svc, *policy, *v6_first, *rq, *pool);
                if absent.contains(&r.key) {
                    continue;
                }
                reqs.insert(r.key.clone(), r.clone());
                reconcile(&mut a, &r, &mut status, &mut settled, false, "an edit")?;
            }
            Op::Delete(svc) => {
                let key = ("ns".to_string(), format!("s{svc}"));
                a.release(&key);
                reqs.remove(&key);
                status.remove(&key);
                settled.remove(&key);
                absent.remove(&key);
            }
            Op::Vanish(svc) => {
                let key = ("ns".to_string(), format!("s{svc}"));
                if reqs.contains_key(&key) {
                    a.release(&key);
                    absent.insert(key);
                }
            }
            Op::Reappear(svc) => {
                let key = ("ns".to_string(), format!("s{svc}"));
                if absent.remove(&key) {
                    let keep = settled.contains(&key);
                    let r = reqs[&key].clone();
                    // Its address may have been given to another Service meanwhile: then the
                    // reconcile fails (reported), it never gets a different one.
                    let before = status.get(&key).cloned();
                    reconcile(
                        &mut a,
                        &r,
                        &mut status,
                        &mut settled,
                        false,
                        "a reappearance",
                    )?;
                    let granted = a.get(&key).filter(|_| settled.contains(&key));
                    if keep && let Some(x) = granted {
                        let old = before.unwrap_or_default();
                        prop_assert!(
                            old.iter().all(|ip| x.ips.contains(ip)),
                            "a Service that came back with its status moved: {:?} -> {:?}",
                            old,
                            x.ips
                        );
                    }
                }
            }
            Op::Restart(seed) => {
                let before = table(&a);
                let mut b = Allocator::new();
                b.set_pools(pools.iter().map(|(k, v)| (k.as_str(), v)));
                let present: Vec<&ServiceRequest> =
                    reqs.values().filter(|r| !absent.contains(&r.key)).collect();
                for r in &present {
                    if let Some(ips) = status.get(&r.key) {
                        let _ = b.restore(r, ips);
                    }
                }
                // Two present Services whose status claims one address (the second was given
                // it while the first was away, and the first's return was reported as a
                // conflict): a restarted controller cannot know which of them the last one
                // kept, so it keeps one of them there (checked by `check_sharing`), reported.
                // Every other Service keeps exactly what it had.
                let mut claims: BTreeMap<IpAddr, usize> = BTreeMap::new();
                for r in &present {
                    for ip in status.get(&r.key).into_iter().flatten() {
                        *claims.entry(*ip).or_default() += 1;
                    }
                }
                // A Service whose last reconcile failed or kept an address against its request
                // (not settled) is settled by the first reconcile after the restart instead.
                let contested = |k: &SvcKey| {
                    !settled.contains(k)
                        || status
                            .get(k)
                            .is_some_and(|ips| ips.iter().any(|ip| claims[ip] > 1))
                };
                let after = table(&b);
                for (k, ips) in &before {
                    if !contested(k) {
                        prop_assert_eq!(after.get(k), Some(ips), "restart changed the table");
                    }
                }
                for (k, ips) in &after {
                    if !contested(k) {
                        prop_assert_eq!(before.get(k), Some(ips), "restart changed the table");
                    }
                }
                // Another replica may reconcile in any order.
                let mut order = present.clone();
                order.sort_by_key(|r| {
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (seed, &r.key).hash(&mut h);
                    h.finish()
                });
                for r in order {
                    let keep = settled.contains(&r.key) && before.contains_key(&r.key);
                    reconcile(
                        &mut b,
                        r,
                        &mut status,
                        &mut settled,
                        keep,
                        "the first reconcile after a restart",
                    )?;
                }
                a = b;
            }
        }
        check_sharing(&a, &reqs)?;
        // The table is what status says, for every Service it knows; a Service it does not
        // know has no status, is away, or failed (its address is someone else's: reported).
        let t = table(&a);
        for (k, ips) in &t {
            if settled.contains(k) {
                prop_assert_eq!(
                    Some(ips),
                    status.get(k),
                    "table and written status disagree"
                );
            } else {
                // A failed adoption records what it can of its status, nothing else.
                let st = status.get(k).cloned().unwrap_or_default();
                prop_assert!(
                    ips.iter().all(|ip| st.contains(ip)),
                    "table {:?} and written status {:?} disagree",
                    ips,
                    st
                );
            }
        }
        for k in status.keys().filter(|k| !t.contains_key(*k)) {
            prop_assert!(
                absent.contains(k) || !settled.contains(k),
                "{:?} has status but the table does not know it",
                k
            );
        }
    }
    Ok(table(&a))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn allocation_invariants_hold_over_random_histories(ops in prop::collection::vec(op(), 1..60)) {
        let t1 = run(&ops)?;
        let t2 = run(&ops)?;
        prop_assert_eq!(t1, t2, "allocation is not deterministic");
    }
}
