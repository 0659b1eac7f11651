//! Kubernetes rules that more than one leafbridge program applies, in one place: which Services
//! are ours, label-selector matching, and EndpointSlice endpoint readiness. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Label an EndpointSlice carries with the name of its Service (discovery.k8s.io/v1).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which Services a program answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// `spec.loadBalancerClass` we own.
    pub class: String,
    /// Also take LoadBalancer Services without a class.
    pub default_class: bool,
}

/// Our class, and not the default implementation (the programs' `--default-class` flag off).
impl Default for ClassConfig {
    fn default() -> Self {
        Self {
            class: crate::annotations::DEFAULT_LOAD_BALANCER_CLASS.to_owned(),
            default_class: false,
        }
    }
}

/// Why a Service is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotManaged {
    #[error("type is {0:?}, not LoadBalancer")]
    NotLoadBalancer(String),
    #[error("loadBalancerClass {0:?} belongs to another implementation")]
    OtherClass(String),
    #[error("no loadBalancerClass and this program is not the default implementation")]
    NoClass,
}

/// type LoadBalancer and our class (or no class when we are the default).
pub fn service_eligibility(svc: &Service, cfg: &ClassConfig) -> Result<(), NotManaged> {
    let spec = svc.spec.as_ref();
    let type_ = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
    if type_ != "LoadBalancer" {
        return Err(NotManaged::NotLoadBalancer(type_.to_owned()));
    }
    match spec.and_then(|s| s.load_balancer_class.as_ref()) {
        Some(c) if *c == cfg.class => Ok(()),
        Some(c) => Err(NotManaged::OtherClass(c.clone())),
        None if cfg.default_class => Ok(()),
        None => Err(NotManaged::NoClass),
    }
}

/// See [`service_eligibility`].
pub fn is_managed(svc: &Service, cfg: &ClassConfig) -> bool {
    service_eligibility(svc, cfg).is_ok()
}

/// A LabelSelector the API server would not have accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("matchExpressions operator {0:?} is not In, NotIn, Exists or DoesNotExist")]
    UnknownOperator(String),
    #[error("matchExpressions operator {operator} on {key:?} needs values")]
    MissingValues { key: String, operator: String },
    #[error("matchExpressions operator {operator} on {key:?} takes no values")]
    UnexpectedValues { key: String, operator: String },
}

/// Kubernetes LabelSelector semantics: every matchLabels entry and every matchExpressions
/// requirement must hold; an empty selector selects everything.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let mut ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let has = labels.get(&e.key);
        let holds = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError::MissingValues {
                    key: e.key.clone(),
                    operator: e.operator.clone(),
                });
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues {
                    key: e.key.clone(),
                    operator: e.operator.clone(),
                });
            }
            "In" => has.is_some_and(|v| values.contains(v)),
            "NotIn" => has.is_none_or(|v| !values.contains(v)),
            "Exists" => has.is_some(),
            "DoesNotExist" => has.is_none(),
            other => return Err(SelectorError::UnknownOperator(other.to_owned())),
        };
        ok &= holds;
    }
    Ok(ok)
}

/// A list of selectors where any one matching is enough; an empty list selects everything.
pub fn any_selector_matches(
    sels: &[LabelSelector],
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    if sels.is_empty() {
        return Ok(true);
    }
    let mut any = false;
    for s in sels {
        // Every selector is checked, so an invalid one is reported even after a match.
        any |= selector_matches(s, labels)?;
    }
    Ok(any)
}

/// An endpoint's state under the EndpointSlice conditions (discovery.k8s.io/v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// `ready` true or unset ("nil should be interpreted as true").
    Ready,
    /// Terminating but still `serving`: usable only while no ready endpoint exists.
    ServingTerminating,
    /// Neither.
    NotReady,
}

impl EndpointState {
    pub fn of(ep: &Endpoint) -> Self {
        let c = ep.conditions.as_ref();
        let ready = c.and_then(|c| c.ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        // `serving` unset: the same as `ready` (older API servers only set `ready`).
        let serving = c.and_then(|c| c.serving).or(ready).unwrap_or(true);
        match ready {
            None | Some(true) if !terminating => EndpointState::Ready,
            _ if terminating && serving => EndpointState::ServingTerminating,
            _ => EndpointState::NotReady,
        }
    }
}

/// Whether `node` has an endpoint that should receive the Service's traffic under
/// `externalTrafficPolicy: Local`, from all of the Service's EndpointSlices: a ready endpoint on
/// the node; or, when no ready endpoint exists anywhere, a terminating-but-serving one on the
/// node (so traffic keeps flowing while the last pods shut down).
pub fn has_usable_local_endpoint<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice> + Clone,
    node: &str,
) -> bool {
    let endpoints = || slices.clone().into_iter().flat_map(|s| s.endpoints.iter());
    let on_node = |ep: &&Endpoint| ep.node_name.as_deref() == Some(node);
    if endpoints().any(|ep| EndpointState::of(ep) == EndpointState::Ready) {
        return endpoints()
            .filter(on_node)
            .any(|ep| EndpointState::of(ep) == EndpointState::Ready);
    }
    endpoints()
        .filter(on_node)
        .any(|ep| EndpointState::of(ep) == EndpointState::ServingTerminating)
}

/// (namespace, Service name) an EndpointSlice belongs to, from its label.
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some((ns.to_owned(), name.clone()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::EndpointConditions;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|s| s.to_string()).collect()),
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let l = labels(&[("rack", "a"), ("role", "gw")]);
        assert!(selector_matches(&LabelSelector::default(), &l).unwrap());
        let ml = LabelSelector {
            match_labels: Some(labels(&[("rack", "a")])),
            ..Default::default()
        };
        assert!(selector_matches(&ml, &l).unwrap());
        assert!(!selector_matches(&ml, &labels(&[("rack", "b")])).unwrap());
        assert!(selector_matches(&expr("rack", "In", &["a", "b"]), &l).unwrap());
        assert!(!selector_matches(&expr("rack", "NotIn", &["a"]), &l).unwrap());
        assert!(selector_matches(&expr("zone", "NotIn", &["a"]), &l).unwrap());
        assert!(selector_matches(&expr("role", "Exists", &[]), &l).unwrap());
        assert!(!selector_matches(&expr("role", "DoesNotExist", &[]), &l).unwrap());
        assert_eq!(
            selector_matches(&expr("role", "Gt", &["1"]), &l),
            Err(SelectorError::UnknownOperator("Gt".into()))
        );
        assert!(selector_matches(&expr("role", "In", &[]), &l).is_err());
        assert!(selector_matches(&expr("role", "Exists", &["x"]), &l).is_err());
    }

    #[test]
    fn an_empty_selector_list_selects_everything_and_any_one_match_is_enough() {
        let l = labels(&[("rack", "a")]);
        assert!(any_selector_matches(&[], &l).unwrap());
        let sels = [expr("rack", "In", &["b"]), expr("rack", "In", &["a"])];
        assert!(any_selector_matches(&sels, &l).unwrap());
        assert!(!any_selector_matches(&sels[..1], &l).unwrap());
    }

    fn ep(node: &str, ready: Option<bool>, serving: Option<bool>, term: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec!["10.0.0.1".into()],
            node_name: Some(node.into()),
            conditions: Some(EndpointConditions {
                ready,
                serving,
                terminating: term,
            }),
            ..Default::default()
        }
    }

    fn slice(eps: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: eps,
            ..Default::default()
        }
    }

    #[test]
    fn nil_ready_means_ready() {
        assert_eq!(
            EndpointState::of(&ep("n", None, None, None)),
            EndpointState::Ready
        );
        let bare = Endpoint::default();
        assert_eq!(EndpointState::of(&bare), EndpointState::Ready);
        assert_eq!(
            EndpointState::of(&ep("n", Some(false), None, None)),
            EndpointState::NotReady
        );
        assert_eq!(
            EndpointState::of(&ep("n", Some(false), Some(true), Some(true))),
            EndpointState::ServingTerminating
        );
        assert_eq!(
            EndpointState::of(&ep("n", Some(false), Some(false), Some(true))),
            EndpointState::NotReady
        );
    }

    #[test]
    fn a_terminating_serving_endpoint_counts_only_while_no_ready_one_exists_anywhere() {
        let term = ep("a", Some(false), Some(true), Some(true));
        let only_term = [slice(vec![term.clone()])];
        assert!(has_usable_local_endpoint(&only_term, "a"));
        assert!(!has_usable_local_endpoint(&only_term, "b"));
        // A ready endpoint on another node (even in another slice) takes over.
        let with_ready = [
            slice(vec![term]),
            slice(vec![ep("b", Some(true), None, None)]),
        ];
        assert!(!has_usable_local_endpoint(&with_ready, "a"));
        assert!(has_usable_local_endpoint(&with_ready, "b"));
    }

    #[test]
    fn a_not_ready_local_endpoint_is_not_usable() {
        let s = [slice(vec![ep("a", Some(false), Some(false), None)])];
        assert!(!has_usable_local_endpoint(&s, "a"));
    }

    fn svc(yaml: serde_json::Value) -> Service {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn only_load_balancer_services_of_our_class_are_managed() {
        let cfg = ClassConfig {
            default_class: true,
            ..Default::default()
        };
        let lb = svc(serde_json::json!({"spec": {"type": "LoadBalancer"}}));
        assert!(is_managed(&lb, &cfg));
        let other = svc(
            serde_json::json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "metallb"}}),
        );
        assert_eq!(
            service_eligibility(&other, &cfg),
            Err(NotManaged::OtherClass("metallb".into()))
        );
        let cip = svc(serde_json::json!({"spec": {"type": "ClusterIP"}}));
        assert!(matches!(
            service_eligibility(&cip, &cfg),
            Err(NotManaged::NotLoadBalancer(_))
        ));
        let strict = ClassConfig {
            default_class: false,
            ..cfg
        };
        assert_eq!(service_eligibility(&lb, &strict), Err(NotManaged::NoClass));
    }
}
