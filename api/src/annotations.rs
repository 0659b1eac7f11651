//! Annotation keys read by leafbridge. One place defines them so the controller, the speaker and
//! the DNS proxy agree on spelling.

/// Requested LoadBalancer addresses, comma-separated, at most one per IP family
/// (e.g. `203.0.113.10,2001:db8::10`). Takes precedence over `spec.loadBalancerIP`.
pub const LOAD_BALANCER_IPS: &str = "leafbridge.io/load-balancer-ips";
/// Name of the IPPool a Service's address must come from.
pub const IP_POOL: &str = "leafbridge.io/ip-pool";
/// Sharing key: Services with the same key may share an address when their ports do not collide.
pub const ALLOW_SHARED_IP: &str = "leafbridge.io/allow-shared-ip";
/// Written by the controller on a Service: the pool its address(es) came from (informational).
pub const ALLOCATED_FROM_POOL: &str = "leafbridge.io/allocated-from-pool";
/// DNS: extra hostnames (comma-separated) under which a Service is answered.
pub const DNS_HOSTNAMES: &str = "leafbridge.io/dns-hostnames";
/// DNS: a Service with this annotation set to `"true"` is answered only to in-cluster views
/// (hidden from the office).
pub const DNS_HIDDEN: &str = "leafbridge.io/dns-hidden";
/// Speaker: opt a Service out of BGP announcement (value `"true"`).
pub const NO_ANNOUNCE: &str = "leafbridge.io/no-announce";

/// The `loadBalancerClass` leafbridge answers to by default.
pub const DEFAULT_LOAD_BALANCER_CLASS: &str = "leafbridge.io/lb";
