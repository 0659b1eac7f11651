//! Property tests of the allocator over random sequences of pool edits, Service
//! creates/updates/deletes and controller restarts.

use std::collections::BTreeMap;
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
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => prop::collection::vec((0..POOL_CHOICES.len(), any::<bool>(), any::<bool>(), prop::option::of(0..3i32)), 0..4)
            .prop_map(Op::SetPools),
        6 => (0..10usize, 0..3u8, any::<bool>(), prop::option::of(0..8u8), prop::option::of(0..4u8))
            .prop_map(|(svc, policy, v6_first, request, pool)| Op::Upsert { svc, policy, v6_first, request, pool }),
        2 => (0..10usize).prop_map(Op::Delete),
        1 => Just(Op::Restart),
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
                if rx.local_traffic || ry.local_traffic {
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

fn run(ops: &[Op]) -> Result<BTreeMap<SvcKey, Vec<IpAddr>>, TestCaseError> {
    let mut a = Allocator::new();
    let mut pools = BTreeMap::new();
    let mut reqs: BTreeMap<SvcKey, ServiceRequest> = BTreeMap::new();
    // What was written to Service status: the only thing a restart can see.
    let mut status: BTreeMap<SvcKey, Vec<IpAddr>> = BTreeMap::new();
    // Services whose current request was granted: only these must never move. (A Service whose
    // last edit failed, e.g. asked for a pool that did not exist yet, moves when it can.)
    let mut settled: std::collections::BTreeSet<SvcKey> = Default::default();
    for op in ops {
        match op {
            Op::SetPools(c) => {
                let before = table(&a);
                pools = pools_from(c);
                a.set_pools(pools.iter().map(|(k, v)| (k.as_str(), v)));
                prop_assert_eq!(&table(&a), &before, "a pool edit moved a Service");
                // Re-reconcile everyone, as the controller does after a pool edit.
                for r in reqs.values() {
                    let was_settled = settled.contains(&r.key);
                    let res = a.ensure(r);
                    if res.is_ok() {
                        settled.insert(r.key.clone());
                    }
                    if let (Ok(ips), Some(old), true) = (res, before.get(&r.key), was_settled) {
                        // PreferDualStack may gain the other family; what it had stays.
                        prop_assert!(
                            old.iter().all(|ip| ips.contains(ip)),
                            "re-reconcile after a pool edit moved a Service: {:?} -> {:?}",
                            old,
                            ips
                        );
                    }
                    if let Some(x) = a.get(&r.key) {
                        status.insert(r.key.clone(), x.ips.clone());
                    }
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
                let before = a.get(&r.key).map(|x| x.ips.clone()).unwrap_or_default();
                reqs.insert(r.key.clone(), r.clone());
                match a.ensure(&r) {
                    Ok(ips) => {
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
                        for ip in &ips {
                            prop_assert!(
                                before.contains(ip) || a.pool_of(ip).is_some(),
                                "{} given outside every pool",
                                ip
                            );
                            if let Some(req_ip) =
                                r.requested.iter().find(|q| Family::of(q) == Family::of(ip))
                            {
                                prop_assert_eq!(req_ip, ip, "requested address not honoured");
                            }
                        }
                        status.insert(r.key.clone(), ips);
                        settled.insert(r.key.clone());
                    }
                    Err(_) => {
                        settled.remove(&r.key);
                        let now = a.get(&r.key).map(|x| x.ips.clone()).unwrap_or_default();
                        prop_assert_eq!(now, before, "a failed request changed the allocation");
                    }
                }
            }
            Op::Delete(svc) => {
                let key = ("ns".to_string(), format!("s{svc}"));
                a.release(&key);
                reqs.remove(&key);
                status.remove(&key);
                settled.remove(&key);
            }
            Op::Restart => {
                let before = table(&a);
                let mut b = Allocator::new();
                b.set_pools(pools.iter().map(|(k, v)| (k.as_str(), v)));
                for (k, ips) in &status {
                    let _ = b.restore(&reqs[k], ips);
                }
                prop_assert_eq!(table(&b), before.clone(), "restart changed the table");
                for r in reqs.values() {
                    let was_settled = settled.contains(&r.key);
                    let res = b.ensure(r);
                    if res.is_ok() {
                        settled.insert(r.key.clone());
                    }
                    if let (Ok(ips), Some(old), true) = (res, before.get(&r.key), was_settled) {
                        prop_assert!(
                            old.iter().all(|ip| ips.contains(ip)),
                            "first reconcile after restart moved a Service"
                        );
                    }
                    if let Some(x) = b.get(&r.key) {
                        status.insert(r.key.clone(), x.ips.clone());
                    }
                }
                a = b;
            }
        }
        check_sharing(&a, &reqs)?;
        prop_assert_eq!(
            table(&a),
            status.clone(),
            "table and written status disagree"
        );
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
