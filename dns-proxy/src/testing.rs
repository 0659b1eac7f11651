//! A small fixed cluster and server, shared by the fuzz targets and the corpus-replay test
//! so both exercise exactly the same request path.

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{Runtime, Server};

const CONFIG: &str = r#"
allow_clients: ["127.0.0.0/8", "192.0.2.0/24"]
cluster:
  external_zone: k8s.corp.example
  service_cidrs: ["10.96.0.0/12"]
  pod_cidrs: ["10.244.0.0/16"]
  node_cidrs: ["127.0.0.0/8"]
views:
  - name: office
    sources: ["192.0.2.0/24"]
    trusted_ecs_from: ["127.0.0.2/32"]
    namespaces_deny: ["secret"]
limits:
  rate_limit: {queries_per_second: 1000000, burst: 1000000}
"#;

const OBJECTS: &str = r#"
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec: {type: LoadBalancer, clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
  status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: default}
  spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
- apiVersion: v1
  kind: Service
  metadata: {name: ext, namespace: default}
  spec: {type: ExternalName, externalName: www.example.test}
"#;

const SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: default, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 5432, protocol: TCP}]
endpoints: [{addresses: [10.244.1.5], hostname: db-0}, {addresses: [10.244.1.6]}]
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default}
spec: {hostname: db-0, subdomain: db, containers: []}
status: {podIP: 10.244.1.5}
"#;

/// A server over the fixed cluster, with no upstreams (forwarded names yield `Forward`).
pub fn fixture_server() -> Server {
    let config = Config::from_yaml(CONFIG).expect("fixture config");
    let mut registry = Registry::default();
    let server = Server::new(
        Runtime::from_config(&config).expect("fixture runtime"),
        1000,
        Metrics::new(&mut registry),
    );
    {
        let mut index = server.index.write().expect("index lock");
        let services: Vec<Service> =
            leafbridge_api::yaml::from_str(OBJECTS).expect("fixture services");
        for s in &services {
            index.apply_service(s);
        }
        let slice: EndpointSlice = leafbridge_api::yaml::from_str(SLICE).expect("fixture slice");
        index.apply_endpoint_slice(&slice);
        let pod: Pod = leafbridge_api::yaml::from_str(POD).expect("fixture pod");
        index.apply_pod(&pod);
    }
    server
}
