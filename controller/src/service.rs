//! Pure translation between core/v1 Services and allocator requests / status.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use leafbridge_api::annotations;
use serde_json::{Value, json};

use crate::alloc::{AllocError, Family, FamilyPolicy, ServiceRequest, SvcKey};

// One definition for every program (the speaker applies the same rule).
pub use leafbridge_api::rules::{ClassConfig, is_managed};

/// Condition type set on a Service whose address is in no IPPool any more.
pub const ORPHAN_CONDITION: &str = "leafbridge.io/AddressOutsidePools";

pub fn key_of(svc: &Service) -> SvcKey {
    (
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

fn family(s: &str) -> Option<Family> {
    match s {
        "IPv4" => Some(Family::IPv4),
        "IPv6" => Some(Family::IPv6),
        _ => None,
    }
}

/// Build the allocator's view of a Service.
pub fn request_from(
    svc: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<ServiceRequest, AllocError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let ann = svc.metadata.annotations.clone().unwrap_or_default();
    let mut requested = vec![];
    let raw = ann
        .get(annotations::LOAD_BALANCER_IPS)
        .cloned()
        .or(spec.load_balancer_ip.clone().filter(|s| !s.is_empty()));
    if let Some(raw) = raw {
        for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ip: IpAddr = part.parse().map_err(|e| {
                AllocError::InvalidRequest(format!("requested address {part:?}: {e}"))
            })?;
            requested.push(ip);
        }
    }
    let policy = match spec.ip_family_policy.as_deref() {
        None | Some("SingleStack") => FamilyPolicy::SingleStack,
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        Some(other) => {
            return Err(AllocError::InvalidRequest(format!(
                "unknown ipFamilyPolicy {other:?}"
            )));
        }
    };
    let ip_families = spec
        .ip_families
        .unwrap_or_default()
        .iter()
        .map(|f| {
            family(f).ok_or_else(|| AllocError::InvalidRequest(format!("unknown ipFamily {f:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ports = spec
        .ports
        .unwrap_or_default()
        .iter()
        .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
        .collect();
    Ok(ServiceRequest {
        key: key_of(svc),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        namespace_labels: namespace_labels.clone(),
        ip_families,
        policy,
        requested,
        pool: ann
            .get(annotations::IP_POOL)
            .filter(|s| !s.is_empty())
            .cloned(),
        sharing_key: ann
            .get(annotations::ALLOW_SHARED_IP)
            .filter(|s| !s.is_empty())
            .cloned(),
        ports,
        local_traffic: spec.external_traffic_policy.as_deref() == Some("Local"),
        selector: spec.selector.unwrap_or_default(),
        status: ingress_ips(svc),
    })
}

/// Whether an unmanaged Service carries ingress this controller must clear: it was ours and
/// its type or class changed, possibly while the controller was down (so the table cannot
/// say). On Kubernetes the status fields' owner says it (`managedFields`); a manifest has no
/// managedFields, so there any ingress of a Service that is no longer a LoadBalancer is stale
/// (nobody else balances it), and a LoadBalancer of another class is cleared only when every
/// ingress address is in one of our pools (`ours`).
pub fn has_stale_ingress(
    svc: &Service,
    field_manager: &str,
    ours: impl Fn(&IpAddr) -> bool,
) -> bool {
    let ips = ingress_ips(svc);
    let conds = owned_status(svc)["conditions"]
        .as_array()
        .is_some_and(|c| !c.is_empty());
    if ips.is_empty() && !conds {
        return false;
    }
    if let Some(mf) = &svc.metadata.managed_fields {
        return mf.iter().any(|m| {
            m.manager.as_deref() == Some(field_manager)
                && m.subresource.as_deref() == Some("status")
        });
    }
    let lb = svc
        .spec
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer"));
    !lb || ips.iter().all(ours)
}

/// Addresses in `status.loadBalancer.ingress`.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The part of the Service status this controller owns, as it is now.
pub fn owned_status(svc: &Service) -> Value {
    let st = svc
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    // Only the fields we write: anything else another writer or a defaulting API server adds
    // must not look like a difference (that would be a write loop).
    let ingress = st
        .pointer("/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            Value::Array(
                a.iter()
                    .map(|i| {
                        let mut m = serde_json::Map::new();
                        for k in ["ip", "ipMode"] {
                            if let Some(v) = i.get(k).filter(|v| !v.is_null()) {
                                m.insert(k.into(), v.clone());
                            }
                        }
                        Value::Object(m)
                    })
                    .collect(),
            )
        });
    let conds: Vec<Value> = st
        .get("conditions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|c| c["type"] == ORPHAN_CONDITION)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut lb = serde_json::Map::new();
    if let Some(i) = ingress.filter(|i| i.as_array().is_some_and(|a| !a.is_empty())) {
        lb.insert("ingress".into(), i);
    }
    json!({"loadBalancer": lb, "conditions": conds})
}

/// The status we want: ingress with `ipMode: VIP` (traffic is delivered to the node with the
/// destination still the LB address, KEP-1860), plus the orphan condition when applicable.
pub fn desired_status(ips: &[IpAddr], orphans: &[IpAddr], current: &Value, now: &str) -> Value {
    let ingress: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect();
    let mut lb = serde_json::Map::new();
    if !ingress.is_empty() {
        lb.insert("ingress".into(), Value::Array(ingress));
    }
    let conds = if orphans.is_empty() {
        vec![]
    } else {
        let list: Vec<String> = orphans.iter().map(ToString::to_string).collect();
        let message = format!(
            "{} is in no IPPool any more; the Service keeps it until an operator changes the pools or the Service",
            list.join(", ")
        );
        let since = current["conditions"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now)
            .to_owned();
        vec![json!({
            "type": ORPHAN_CONDITION,
            "status": "True",
            "reason": "AddressOutsidePools",
            "message": message,
            "lastTransitionTime": since,
        })]
    };
    json!({"loadBalancer": lb, "conditions": conds})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        leafbridge_api::yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn managed_only_for_our_class_or_unset_class_when_default() {
        let cfg = ClassConfig {
            class: "leafbridge.io/lb".into(),
            default_class: false,
        };
        let ours = svc(
            "metadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerClass: leafbridge.io/lb}",
        );
        let other =
            svc("metadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerClass: metallb}");
        let none = svc("metadata: {name: a}\nspec: {type: LoadBalancer}");
        let cluster_ip = svc("metadata: {name: a}\nspec: {type: ClusterIP}");
        assert!(is_managed(&ours, &cfg));
        assert!(!is_managed(&other, &cfg));
        assert!(!is_managed(&none, &cfg));
        assert!(!is_managed(&cluster_ip, &cfg));
        let dflt = ClassConfig {
            default_class: true,
            ..cfg
        };
        assert!(is_managed(&none, &dflt));
        assert!(!is_managed(&other, &dflt));
    }

    #[test]
    fn request_reads_annotations_families_and_ports() {
        let s = svc(r#"
metadata:
  name: web
  namespace: shop
  annotations:
    leafbridge.io/load-balancer-ips: "203.0.113.5, 2001:db8::5"
    leafbridge.io/ip-pool: office
    leafbridge.io/allow-shared-ip: k1
spec:
  type: LoadBalancer
  loadBalancerIP: 203.0.113.9
  ipFamilies: [IPv6, IPv4]
  ipFamilyPolicy: RequireDualStack
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 53, protocol: UDP}, {port: 80}]
"#);
        let r = request_from(&s, &BTreeMap::new()).unwrap();
        assert_eq!(r.key, ("shop".into(), "web".into()));
        assert_eq!(
            r.requested,
            [
                "203.0.113.5".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        assert_eq!(r.pool.as_deref(), Some("office"));
        assert_eq!(r.sharing_key.as_deref(), Some("k1"));
        assert_eq!(r.policy, FamilyPolicy::RequireDualStack);
        assert_eq!(r.wanted_families(), [Family::IPv6, Family::IPv4]);
        assert_eq!(r.ports, [("UDP".to_string(), 53), ("TCP".to_string(), 80)]);
        assert!(r.local_traffic);
        let bad = svc(
            "metadata: {name: a, annotations: {leafbridge.io/load-balancer-ips: nope}}\nspec: {type: LoadBalancer}",
        );
        assert_eq!(
            request_from(&bad, &BTreeMap::new()).unwrap_err().reason(),
            "InvalidRequest"
        );
    }

    #[test]
    fn stale_ingress_is_ours_by_managed_fields_or_by_type_and_pools() {
        let ours = |ip: &IpAddr| ip.to_string().starts_with("203.0.113.");
        let st = "status: {loadBalancer: {ingress: [{ip: 203.0.113.1}]}}";
        let cluster_ip = svc(&format!(
            "metadata: {{name: a}}\nspec: {{type: ClusterIP}}\n{st}"
        ));
        assert!(has_stale_ingress(&cluster_ip, "lb", ours));
        let other = svc(&format!(
            "metadata: {{name: a}}\nspec: {{type: LoadBalancer, loadBalancerClass: x}}\n{st}"
        ));
        assert!(has_stale_ingress(&other, "lb", ours));
        let foreign = svc(
            "metadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerClass: x}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}",
        );
        assert!(!has_stale_ingress(&foreign, "lb", ours));
        let by_other_manager = svc(&format!(
            "metadata: {{name: a, managedFields: [{{manager: metallb, operation: Apply, subresource: status}}]}}\nspec: {{type: ClusterIP}}\n{st}"
        ));
        assert!(!has_stale_ingress(&by_other_manager, "lb", ours));
        let by_us = svc(&format!(
            "metadata: {{name: a, managedFields: [{{manager: lb, operation: Apply, subresource: status}}]}}\nspec: {{type: ClusterIP}}\n{st}"
        ));
        assert!(has_stale_ingress(&by_us, "lb", ours));
        let empty = svc("metadata: {name: a}\nspec: {type: ClusterIP}");
        assert!(!has_stale_ingress(&empty, "lb", ours));
    }

    #[test]
    fn desired_status_matches_owned_status_after_it_is_written() {
        let ips = ["203.0.113.1".parse().unwrap()];
        let want = desired_status(&ips, &[], &Value::Null, "2026-01-01T00:00:00Z");
        let mut s = svc("metadata: {name: a}\nspec: {type: LoadBalancer}");
        s.status = Some(serde_json::from_value(want.clone()).unwrap());
        assert_eq!(owned_status(&s), want);
        assert_eq!(ingress_ips(&s), ips);
    }
}
