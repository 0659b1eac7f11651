//! Cluster objects for the state-directory backend: builders for the Kubernetes objects and
//! leafbridge CRDs the programs read, and [`StateDir`], which writes them the way the programs
//! expect (one file per object, atomic rename, under the directory's write lock, keeping the
//! `status` another program wrote, as `kubectl apply` never touches status).
//!
//! ```no_run
//! use leafbridge_tests::manifests::{StateDir, Node, Service, EndpointSlice, IPPool};
//! let dir = StateDir::new(std::env::temp_dir().join("lb-doc-state"));
//! dir.apply(&IPPool::new("office", &["203.0.113.0/28"]));
//! dir.apply(&Node::new("node0", "192.0.2.10".parse().unwrap()).pod_cidr("100.64.0.0/24"));
//! dir.apply(&Service::new("shop", "web").local());
//! dir.apply(&EndpointSlice::new("shop", "web").endpoint("100.64.0.10", "node0"));
//! let ips = dir.service_ingress("shop", "web"); // once the controller has allocated
//! # let _ = ips;
//! ```
//!
//! Documents are written as JSON, which is YAML: no YAML emitter needed. They are read back
//! with the programs' own YAML reader (they write status as YAML).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The Services' `spec.loadBalancerClass` the controller owns by default.
pub const LB_CLASS: &str = "leafbridge.io/lb";
pub const LEAFBRIDGE_API: &str = "leafbridge.io/v1alpha1";

/// Something with a place in the state directory.
pub trait Manifest {
    /// The whole object as Kubernetes writes it.
    fn to_value(&self) -> Value;

    /// The file it lives in, relative to the state directory: `<kind>/<namespace>-<name>.yaml`.
    fn file_name(&self) -> String {
        file_name_of(&self.to_value())
    }
}

impl Manifest for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

fn file_name_of(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("Unknown").to_lowercase();
    let name = v["metadata"]["name"].as_str().unwrap_or("unnamed");
    match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind}/{ns}-{name}.yaml"),
        None => format!("{kind}/{name}.yaml"),
    }
}

fn labels_value(labels: &BTreeMap<String, String>) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// A `matchLabels` label selector.
pub fn match_labels(labels: &[(&str, &str)]) -> Value {
    let m: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    json!({ "matchLabels": m })
}

/// A core/v1 Node with an InternalIP, `spec.podCIDRs` and a Ready condition.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub internal_ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// `spec.unschedulable` (`kubectl cordon`).
    pub unschedulable: bool,
    /// (key, effect) of `spec.taints`.
    pub taints: Vec<(String, String)>,
}

impl Node {
    pub fn new(name: &str, internal_ip: IpAddr) -> Node {
        Node {
            name: name.to_string(),
            internal_ips: vec![internal_ip],
            pod_cidrs: Vec::new(),
            labels: BTreeMap::from([("kubernetes.io/hostname".to_string(), name.to_string())]),
            ready: true,
            unschedulable: false,
            taints: Vec::new(),
        }
    }

    pub fn pod_cidr(mut self, cidr: &str) -> Node {
        self.pod_cidrs.push(cidr.to_string());
        self
    }

    pub fn internal_ip(mut self, ip: IpAddr) -> Node {
        self.internal_ips.push(ip);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Node {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// `kubectl cordon`: `spec.unschedulable: true` and the taint the API server adds with it.
    pub fn cordoned(mut self, yes: bool) -> Node {
        self.unschedulable = yes;
        self
    }

    pub fn ready(mut self, yes: bool) -> Node {
        self.ready = yes;
        self
    }

    pub fn taint(mut self, key: &str, effect: &str) -> Node {
        self.taints.push((key.to_string(), effect.to_string()));
        self
    }
}

impl Manifest for Node {
    fn to_value(&self) -> Value {
        let mut taints: Vec<Value> = self
            .taints
            .iter()
            .map(|(k, e)| json!({"key": k, "effect": e}))
            .collect();
        if self.unschedulable {
            taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}));
        }
        let mut spec = json!({});
        if !self.pod_cidrs.is_empty() {
            spec["podCIDR"] = json!(self.pod_cidrs[0]);
            spec["podCIDRs"] = json!(self.pod_cidrs);
        }
        if self.unschedulable {
            spec["unschedulable"] = json!(true);
        }
        if !taints.is_empty() {
            spec["taints"] = Value::Array(taints);
        }
        let addresses: Vec<Value> = self
            .internal_ips
            .iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
            .chain([json!({"type": "Hostname", "address": self.name})])
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels_value(&self.labels)},
            "spec": spec,
            "status": {
                "addresses": addresses,
                "conditions": [{
                    "type": "Ready",
                    "status": if self.ready { "True" } else { "False" },
                    "reason": if self.ready { "KubeletReady" } else { "KubeletNotReady" },
                }],
            },
        })
    }
}

/// A core/v1 Service of type LoadBalancer of our class, port 80/TCP.
#[derive(Debug, Clone)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `externalTrafficPolicy: Local` (otherwise `Cluster`).
    pub local: bool,
    pub ports: Vec<u16>,
    pub cluster_ip: Option<String>,
    pub dual_stack: bool,
    /// Extra `spec` fields merged in last.
    pub extra_spec: Value,
}

impl Service {
    pub fn new(namespace: &str, name: &str) -> Service {
        Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            local: false,
            ports: vec![80],
            cluster_ip: None,
            dual_stack: false,
            extra_spec: json!({}),
        }
    }

    /// `externalTrafficPolicy: Local`.
    pub fn local(mut self) -> Service {
        self.local = true;
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Service {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Service {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    pub fn port(mut self, port: u16) -> Service {
        self.ports = vec![port];
        self
    }

    pub fn cluster_ip(mut self, ip: &str) -> Service {
        self.cluster_ip = Some(ip.to_string());
        self
    }

    pub fn dual_stack(mut self) -> Service {
        self.dual_stack = true;
        self
    }
}

impl Manifest for Service {
    fn to_value(&self) -> Value {
        let mut spec = json!({
            "type": "LoadBalancer",
            "loadBalancerClass": LB_CLASS,
            "externalTrafficPolicy": if self.local { "Local" } else { "Cluster" },
            "selector": {"app": self.name},
            "ports": self.ports.iter().map(|p| json!({"port": p, "protocol": "TCP", "targetPort": p})).collect::<Vec<_>>(),
        });
        if let Some(ip) = &self.cluster_ip {
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
        }
        if self.dual_stack {
            spec["ipFamilyPolicy"] = json!("RequireDualStack");
            spec["ipFamilies"] = json!(["IPv4", "IPv6"]);
        }
        if let (Value::Object(s), Value::Object(extra)) = (&mut spec, &self.extra_spec) {
            s.extend(extra.clone());
        }
        let mut meta = json!({"name": self.name, "namespace": self.namespace});
        if !self.labels.is_empty() {
            meta["labels"] = labels_value(&self.labels);
        }
        if !self.annotations.is_empty() {
            meta["annotations"] = labels_value(&self.annotations);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
    }
}

/// One endpoint of an [`EndpointSlice`].
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: String,
    pub node: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// A discovery.k8s.io/v1 EndpointSlice of a Service (name `<service>-<suffix>`).
#[derive(Debug, Clone)]
pub struct EndpointSlice {
    pub namespace: String,
    pub service: String,
    pub suffix: String,
    pub ipv6: bool,
    pub endpoints: Vec<Endpoint>,
    pub port: u16,
}

impl EndpointSlice {
    pub fn new(namespace: &str, service: &str) -> EndpointSlice {
        EndpointSlice {
            namespace: namespace.to_string(),
            service: service.to_string(),
            suffix: "a".to_string(),
            ipv6: false,
            endpoints: Vec::new(),
            port: 80,
        }
    }

    pub fn suffix(mut self, s: &str) -> EndpointSlice {
        self.suffix = s.to_string();
        self
    }

    /// A ready, serving endpoint on `node`.
    pub fn endpoint(self, address: &str, node: &str) -> EndpointSlice {
        self.endpoint_with(address, node, true, true, false)
    }

    /// An endpoint with explicit conditions (e.g. terminating but still serving).
    pub fn endpoint_with(
        mut self,
        address: &str,
        node: &str,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> EndpointSlice {
        self.endpoints.push(Endpoint {
            address: address.to_string(),
            node: node.to_string(),
            ready,
            serving,
            terminating,
        });
        self
    }
}

impl Manifest for EndpointSlice {
    fn to_value(&self) -> Value {
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| {
                json!({
                    "addresses": [e.address],
                    "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
                    "nodeName": e.node,
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-{}", self.service, self.suffix),
                "namespace": self.namespace,
                "labels": {"kubernetes.io/service-name": self.service},
            },
            "addressType": if self.ipv6 { "IPv6" } else { "IPv4" },
            "endpoints": endpoints,
            "ports": [{"port": self.port, "protocol": "TCP"}],
        })
    }
}

/// A leafbridge IPPool.
#[derive(Debug, Clone)]
pub struct IPPool {
    pub name: String,
    pub addresses: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub extra_spec: Value,
}

impl IPPool {
    pub fn new(name: &str, addresses: &[&str]) -> IPPool {
        IPPool {
            name: name.to_string(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::new(),
            extra_spec: json!({}),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> IPPool {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
}

impl Manifest for IPPool {
    fn to_value(&self) -> Value {
        let mut spec = json!({"addresses": self.addresses});
        merge(&mut spec, &self.extra_spec);
        json!({
            "apiVersion": LEAFBRIDGE_API,
            "kind": "IPPool",
            "metadata": {"name": self.name, "labels": labels_value(&self.labels)},
            "spec": spec,
        })
    }
}

/// A leafbridge BGPPeer. Fields the builder has no method for go into `spec` with
/// [`BGPPeer::field`].
#[derive(Debug, Clone)]
pub struct BGPPeer {
    pub name: String,
    pub spec: Value,
}

impl BGPPeer {
    pub fn new(name: &str, peer_address: IpAddr, peer_asn: u32, my_asn: u32) -> BGPPeer {
        BGPPeer {
            name: name.to_string(),
            spec: json!({
                "peerAddress": peer_address.to_string(),
                "peerASN": peer_asn,
                "myASN": my_asn,
            }),
        }
    }

    /// Sets `spec.<key>` (camelCase, as in the CRD).
    pub fn field(mut self, key: &str, value: Value) -> BGPPeer {
        self.spec[key] = value;
        self
    }

    pub fn hold_time(self, secs: u16) -> BGPPeer {
        self.field("holdTimeSeconds", json!(secs))
    }

    pub fn graceful_restart(self) -> BGPPeer {
        self.field("gracefulRestart", json!(true))
    }

    pub fn password_secret(self, namespace: &str, name: &str, key: &str) -> BGPPeer {
        self.field(
            "passwordSecret",
            json!({"namespace": namespace, "name": name, "key": key}),
        )
    }

    pub fn node_selector(self, labels: &[(&str, &str)]) -> BGPPeer {
        self.field("nodeSelectors", json!([match_labels(labels)]))
    }
}

impl Manifest for BGPPeer {
    fn to_value(&self) -> Value {
        json!({
            "apiVersion": LEAFBRIDGE_API,
            "kind": "BGPPeer",
            "metadata": {"name": self.name},
            "spec": self.spec,
        })
    }
}

/// A leafbridge BGPAdvertisement; `spec` fields set with [`BGPAdvertisement::field`] or the
/// helpers.
#[derive(Debug, Clone)]
pub struct BGPAdvertisement {
    pub name: String,
    pub spec: Value,
}

impl BGPAdvertisement {
    pub fn new(name: &str) -> BGPAdvertisement {
        BGPAdvertisement {
            name: name.to_string(),
            spec: json!({}),
        }
    }

    pub fn field(mut self, key: &str, value: Value) -> BGPAdvertisement {
        self.spec[key] = value;
        self
    }

    pub fn ip_pools(self, pools: &[&str]) -> BGPAdvertisement {
        self.field("ipPools", json!(pools))
    }

    pub fn pod_cidrs(self) -> BGPAdvertisement {
        self.field("advertisePodCIDRs", json!(true))
    }

    /// Service CIDRs announced by the nodes `gateways` selects.
    pub fn service_cidrs(self, cidrs: &[&str], gateways: &[(&str, &str)]) -> BGPAdvertisement {
        self.field("serviceCIDRs", json!(cidrs))
            .field("serviceCIDRGatewaySelector", match_labels(gateways))
    }
}

impl Manifest for BGPAdvertisement {
    fn to_value(&self) -> Value {
        json!({
            "apiVersion": LEAFBRIDGE_API,
            "kind": "BGPAdvertisement",
            "metadata": {"name": self.name},
            "spec": self.spec,
        })
    }
}

/// A core/v1 Secret with `stringData`-like plain values (written base64 in `data`).
pub fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(base64(v.as_bytes()))))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": data,
    })
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn merge(into: &mut Value, extra: &Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, extra) {
        a.extend(b.clone());
    }
}

/// A state directory the programs share, written like `kubectl apply` would.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Creates `root` (and its parents) if needed.
    #[track_caller]
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("create state dir {}: {e}", root.display()));
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, m: &impl Manifest) -> PathBuf {
        self.root.join(m.file_name())
    }

    /// Creates or replaces the object's file. A `status` already in the file (written by a
    /// program) is kept unless the new object carries its own.
    #[track_caller]
    pub fn apply(&self, m: &impl Manifest) {
        let mut v = m.to_value();
        let path = self.path_of(m);
        let _lock = self.lock();
        if v.get("status").is_none()
            && let Some(status) = read_first(&path).and_then(|old| old.get("status").cloned())
        {
            v["status"] = status;
        }
        write_atomically(&path, &serde_json::to_vec_pretty(&v).expect("JSON"));
    }

    /// Writes many objects at once, one file each, under one hold of the write lock (1,000
    /// Services appear within a few milliseconds).
    #[track_caller]
    pub fn apply_many(&self, ms: &[impl Manifest]) {
        let _lock = self.lock();
        for m in ms {
            write_atomically(
                &self.path_of(m),
                &serde_json::to_vec_pretty(&m.to_value()).expect("JSON"),
            );
        }
    }

    /// Writes many objects into one `kind: List` file (`file`, relative to the state
    /// directory), as one `kubectl apply -f` of one manifest would bring them.
    #[track_caller]
    pub fn apply_in_one_file(&self, file: &str, ms: &[impl Manifest]) {
        let _lock = self.lock();
        let items: Vec<Value> = ms.iter().map(|m| m.to_value()).collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        write_atomically(
            &self.root.join(file),
            &serde_json::to_vec_pretty(&list).expect("JSON"),
        );
    }

    /// Deletes the object's file (`kubectl delete`).
    #[track_caller]
    pub fn delete(&self, m: &impl Manifest) {
        let path = self.path_of(m);
        let _lock = self.lock();
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("delete {}: {e}", path.display()));
    }

    /// The object as it is in its file now (with any status a program wrote).
    pub fn read(&self, m: &impl Manifest) -> Option<Value> {
        read_first(&self.path_of(m))
    }

    /// `status.loadBalancer.ingress[].ip` of a Service, empty until the controller allocated.
    pub fn service_ingress(&self, namespace: &str, name: &str) -> Vec<IpAddr> {
        self.read(&Service::new(namespace, name))
            .map(|v| ingress_of(&v))
            .unwrap_or_default()
    }

    /// Every document of `kind` in any file of the directory (e.g. the speakers'
    /// `BGPNodeState`s, wherever they write them).
    pub fn find_kind(&self, kind: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(text) = std::fs::read_to_string(&p) {
                    out.extend(
                        parse_yaml_documents(&text)
                            .into_iter()
                            .filter(|d| d["kind"] == kind),
                    );
                }
            }
        }
        out
    }

    /// Holds `.leafbridge/write.lock`, the advisory lock every program's status writer takes,
    /// so a test's edit never races a status write.
    fn lock(&self) -> std::fs::File {
        let meta = self.root.join(".leafbridge");
        std::fs::create_dir_all(&meta).expect("create .leafbridge");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(meta.join("write.lock"))
            .expect("open write.lock");
        f.lock().expect("lock write.lock");
        f
    }
}

/// `status.loadBalancer.ingress[].ip` of a Service document.
pub fn ingress_of(service: &Value) -> Vec<IpAddr> {
    service["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ip"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The documents of a YAML (or JSON) text, read as the programs read them; none if the text
/// does not parse.
pub fn parse_yaml_documents(text: &str) -> Vec<Value> {
    leafbridge_api::yaml::documents(text).unwrap_or_default()
}

fn read_first(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_yaml_documents(&text).into_iter().next()
}

/// Temp file beside the target (a dot name: the state directory ignores it), fsync, rename.
#[track_caller]
fn write_atomically(path: &Path, bytes: &[u8]) {
    let dir = path.parent().expect("file in a directory");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f =
        std::fs::File::create(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn apply_keeps_status_a_program_wrote_and_reads_ingress() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let svc = Service::new("shop", "web");
        dir.apply(&svc);
        assert!(dir.service_ingress("shop", "web").is_empty());
        // The controller writes status (as YAML).
        std::fs::write(
            dir.path_of(&svc),
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {type: LoadBalancer}\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: 203.0.113.1\n",
        )
        .unwrap();
        dir.apply(&svc.clone().local());
        let v = dir.read(&svc).unwrap();
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(
            dir.service_ingress("shop", "web"),
            vec!["203.0.113.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(dir.find_kind("Service").len(), 1);
        assert_eq!(svc.file_name(), "service/shop-web.yaml");
        let node = Node::new("n0", "192.0.2.10".parse().unwrap())
            .pod_cidr("100.64.0.0/24")
            .cordoned(true)
            .to_value();
        assert_eq!(node["spec"]["unschedulable"], true);
        assert_eq!(node["spec"]["podCIDRs"][0], "100.64.0.0/24");
        assert_eq!(node["status"]["conditions"][0]["status"], "True");
    }
}
