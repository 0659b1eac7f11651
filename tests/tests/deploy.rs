//! deploy/ renders offline and asks for nothing the programs do not use: every kustomization
//! renders with `kubectl kustomize`; RBAC grants exactly the calls in [`ACCESS`]; container
//! arguments are flags the binaries accept (their `--help`); built-in objects use only fields
//! of the Kubernetes types; `leafbridge.io` objects validate against the generated CRD
//! schemas; the DNS proxy's ConfigMaps are configurations it loads. And the documents that
//! describe them stay true: docs/flags.md names exactly the flags each binary accepts,
//! docs/crds.md exactly the fields of each CRD, and no document links outside the repository.
//!
//! The flag check runs the binaries in the Cargo target directory: `cargo test --workspace`
//! builds them; alone, run `cargo build -p leafbridge-controller -p leafbridge-speaker
//! -p leafbridge-dns` first (the test fails, saying so, when one is missing or older than its
//! sources).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde_json::Value;

use leafbridge_tests::require;

/// One RBAC grant a program needs: `verbs` on `group`/`resource`, cluster-wide
/// (`namespace: None`, a ClusterRole) or in one namespace (a Role), limited to `names` when
/// not empty.
#[derive(Debug)]
struct Access {
    program: &'static str,
    namespace: Option<&'static str>,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    names: &'static [&'static str],
}

const fn cluster(
    program: &'static str,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Access {
    Access {
        program,
        namespace: None,
        group,
        resource,
        verbs,
        names: &[],
    }
}

const SYSTEM_NS: &str = "leafbridge-system";
const LIST_WATCH: &[&str] = &["list", "watch"];

/// What each program calls on the API server: the one table the RBAC in deploy/base must match
/// exactly. Programs are named by their ServiceAccount.
///
/// - `StateSource::watch` (api/src/state/mod.rs) runs a `kube::runtime::watcher` on
///   `Api::all`: list and watch in every namespace, nothing else.
/// - `StateSource::apply_status` is a server-side apply `PATCH` of the status subresource.
/// - `EventSink` publishes through kube's `Recorder` (events.k8s.io/v1), which creates an
///   Event and patches it when the same one repeats.
const ACCESS: &[Access] = &[
    // controller/src/reconcile.rs `run`: reflectors on Services, IPPools and Namespaces (the
    // last for IPPool namespaceSelectors).
    cluster("leafbridge-controller", "", "services", LIST_WATCH),
    cluster("leafbridge-controller", "", "namespaces", LIST_WATCH),
    cluster(
        "leafbridge-controller",
        "leafbridge.io",
        "ippools",
        LIST_WATCH,
    ),
    // controller/src/reconcile.rs: `apply_status::<Service>` (status.loadBalancer) and
    // `apply_status::<IPPool>` (pool conditions and counts).
    cluster("leafbridge-controller", "", "services/status", &["patch"]),
    cluster(
        "leafbridge-controller",
        "leafbridge.io",
        "ippools/status",
        &["patch"],
    ),
    // controller/src/reconcile.rs `event_sink`: allocation Events.
    cluster(
        "leafbridge-controller",
        "events.k8s.io",
        "events",
        &["create", "patch"],
    ),
    // controller/src/leader.rs `kube_lease`: kube-lease-manager reads the Lease, creates it
    // when missing and patches it to take and renew it. Only in its own namespace
    // (--lease-namespace, from POD_NAMESPACE); get and patch only on its own Lease
    // (--lease-name); `create` cannot be limited by name.
    Access {
        program: "leafbridge-controller",
        namespace: Some(SYSTEM_NS),
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "patch"],
        names: &["leafbridge-controller"],
    },
    Access {
        program: "leafbridge-controller",
        namespace: Some(SYSTEM_NS),
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create"],
        names: &[],
    },
    // dns-proxy/src/main.rs `watch_source`: `feed::<Service>`, `feed::<EndpointSlice>`,
    // `feed::<Pod>` and `feed_dns_views`. It writes nothing.
    cluster("leafbridge-dns", "", "services", LIST_WATCH),
    cluster("leafbridge-dns", "", "pods", LIST_WATCH),
    cluster(
        "leafbridge-dns",
        "discovery.k8s.io",
        "endpointslices",
        LIST_WATCH,
    ),
    cluster("leafbridge-dns", "leafbridge.io", "dnsviews", LIST_WATCH),
    // The speaker's cluster mode, its desired-state inputs: Nodes (pod CIDRs, labels),
    // Services and EndpointSlices (which nodes have local endpoints), and the BGP and BFD
    // configuration kinds.
    cluster("leafbridge-speaker", "", "nodes", LIST_WATCH),
    cluster("leafbridge-speaker", "", "services", LIST_WATCH),
    cluster(
        "leafbridge-speaker",
        "discovery.k8s.io",
        "endpointslices",
        LIST_WATCH,
    ),
    cluster("leafbridge-speaker", "leafbridge.io", "ippools", LIST_WATCH),
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "bgppeers",
        LIST_WATCH,
    ),
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "bgpadvertisements",
        LIST_WATCH,
    ),
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "bfdprofiles",
        LIST_WATCH,
    ),
    // Each speaker writes the BGPNodeState named after its node by server-side apply; an apply
    // that creates the object is authorized as `create` too.
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "bgpnodestates",
        &["create", "patch"],
    ),
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "bgpnodestates/status",
        &["create", "patch"],
    ),
    // speaker/src/cluster.rs `write_object_statuses`: IPPool `status.advertisement` and the
    // `Valid` condition of BGPPeers and BGPAdvertisements.
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "ippools/status",
        &["patch"],
    ),
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "bgppeers/status",
        &["patch"],
    ),
    cluster(
        "leafbridge-speaker",
        "leafbridge.io",
        "bgpadvertisements/status",
        &["patch"],
    ),
    // Service Events (speaker/src/cluster.rs `spawn_event_publisher`).
    cluster(
        "leafbridge-speaker",
        "events.k8s.io",
        "events",
        &["create", "patch"],
    ),
    // BGPPeer spec.passwordSecret: the TCP-MD5 password, read with a GET, and only from
    // Secrets in leafbridge-system.
    Access {
        program: "leafbridge-speaker",
        namespace: Some(SYSTEM_NS),
        group: "",
        resource: "secrets",
        verbs: &["get"],
        names: &[],
    },
];

/// Flags the manifests pass that the binaries in this tree do not accept yet, with the change
/// that brings them. Each entry must still be missing from `--help`: once the flag lands the
/// test fails and asks for the entry to go, so the list never outlives its reason.
const PENDING_FLAGS: &[(&str, &str, &str)] = &[];

/// Environment variables the manifests set that a program reads directly (not through a clap
/// `env`, which `--help` shows as `[env: NAME=]`), with the code that reads them. The test
/// checks that the name appears in that crate's sources.
const ENV_READ_BY_CODE: &[(&str, &str, &str)] = &[(
    "leafbridge-controller",
    "POD_NAME",
    "controller/src/main.rs (Lease identity), controller/src/reconcile.rs (Event reporter)",
)];

/// Like [`PENDING_FLAGS`], for environment variables: read by a change in progress, so not yet
/// in the program's `--help` or sources (checked; the entry must go when it lands).
const PENDING_ENV: &[(&str, &str, &str)] = &[];

/// The crate directory of each program.
fn crate_dir(program: &str) -> PathBuf {
    repo().join(match program {
        "leafbridge-controller" => "controller",
        "leafbridge-speaker" => "speaker",
        "leafbridge-dns" => "dns-proxy",
        other => panic!("unknown program {other}"),
    })
}

/// Whether `needle` appears in a `.rs` file under `dir`.
fn sources_mention(dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources_mention(&p, needle)
        } else {
            p.extension().is_some_and(|x| x == "rs")
                && std::fs::read_to_string(&p).unwrap().contains(needle)
        }
    })
}

/// Kinds from outside Kubernetes and leafbridge that examples may use; their CRDs are not here,
/// so only their presence is checked.
const FOREIGN_KINDS: &[(&str, &str)] = &[("monitoring.coreos.com/v1", "ServiceMonitor")];

const PROGRAMS: &[&str] = &[
    "leafbridge-controller",
    "leafbridge-speaker",
    "leafbridge-dns",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every directory under deploy/ with a kustomization.yaml.
fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        if entries.iter().any(|p| p.ends_with("kustomization.yaml")) {
            out.push(dir.to_owned());
        }
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("deploy"), &mut out);
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

/// `kubectl kustomize DIR`, parsed into one JSON value per document.
fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new(require("kubectl"))
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        rel(dir),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    let docs: Vec<Value> = leafbridge_api::yaml::documents(&text)
        .unwrap_or_else(|e| panic!("{}: unparsable output: {e}", rel(dir)));
    assert!(!docs.is_empty(), "{} renders nothing", rel(dir));
    docs
}

fn render_all() -> Vec<(PathBuf, Vec<Value>)> {
    kustomizations()
        .into_iter()
        .map(|d| {
            let docs = render(&d);
            (d, docs)
        })
        .collect()
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn id(o: &Value) -> String {
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{} {ns}/{}", kind(o), name(o)),
        None => format!("{} {}", kind(o), name(o)),
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn every_kustomization_renders_into_named_objects() {
    let all = render_all();
    for want in ["deploy/base", "deploy/crds"] {
        assert!(
            all.iter().any(|(d, _)| rel(d) == want),
            "{want} has no kustomization"
        );
    }
    assert!(
        all.iter()
            .filter(|(d, _)| rel(d).starts_with("deploy/examples/"))
            .count()
            >= 5,
        "the examples are missing"
    );
    for (dir, docs) in &all {
        let mut seen = BTreeSet::new();
        for o in docs {
            assert!(
                o["apiVersion"].is_string() && !kind(o).is_empty() && !name(o).is_empty(),
                "{}: object without apiVersion, kind or name: {o}",
                rel(dir)
            );
            assert!(seen.insert(id(o)), "{}: {} twice", rel(dir), id(o));
        }
    }
}

#[test]
fn crds_kustomization_lists_every_generated_crd() {
    let dir = repo().join("deploy/crds");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    let k: Value = leafbridge_api::yaml::from_str(
        &std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let mut listed: Vec<String> = strs(&k["resources"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(
        listed, files,
        "deploy/crds/kustomization.yaml must list exactly the CRD files beside it"
    );
    let rendered = render(&dir);
    assert!(
        rendered
            .iter()
            .all(|o| kind(o) == "CustomResourceDefinition"),
        "deploy/crds renders something other than CRDs"
    );
}

/// (program, namespace or "*", group, resource, verb, resourceName or "*").
type Grant = (String, String, String, String, String, String);

fn granted(docs: &[Value]) -> BTreeSet<Grant> {
    let roles: BTreeMap<(String, String), &Value> = docs
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRole" | "Role"))
        .map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("*");
            ((format!("{}/{ns}", kind(o)), name(o).to_owned()), o)
        })
        .collect();
    let mut used = BTreeSet::new();
    let mut out = BTreeSet::new();
    for b in docs
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRoleBinding" | "RoleBinding"))
    {
        let scope = if kind(b) == "RoleBinding" {
            b["metadata"]["namespace"]
                .as_str()
                .unwrap_or_else(|| panic!("{} has no namespace", id(b)))
        } else {
            "*"
        };
        let role_kind = b["roleRef"]["kind"].as_str().unwrap();
        let role_ns = if role_kind == "Role" { scope } else { "*" };
        let key = (
            format!("{role_kind}/{role_ns}"),
            b["roleRef"]["name"].as_str().unwrap().to_owned(),
        );
        let role = roles
            .get(&key)
            .unwrap_or_else(|| panic!("{} binds {key:?}, which is not rendered", id(b)));
        used.insert(key);
        for s in b["subjects"].as_array().unwrap() {
            assert_eq!(s["kind"], "ServiceAccount", "{}: {s}", id(b));
            assert_eq!(s["namespace"], SYSTEM_NS, "{}: {s}", id(b));
            let program = s["name"].as_str().unwrap();
            for r in role["rules"].as_array().unwrap() {
                assert!(
                    r.get("nonResourceURLs").is_none(),
                    "{}: non-resource URLs",
                    id(role)
                );
                let names = strs(&r["resourceNames"]);
                let names = if names.is_empty() { vec!["*"] } else { names };
                for g in strs(&r["apiGroups"]) {
                    for res in strs(&r["resources"]) {
                        for v in strs(&r["verbs"]) {
                            for n in &names {
                                out.insert((
                                    program.to_owned(),
                                    scope.to_owned(),
                                    g.to_owned(),
                                    res.to_owned(),
                                    v.to_owned(),
                                    (*n).to_owned(),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    let unbound: Vec<_> = roles.keys().filter(|k| !used.contains(*k)).collect();
    assert!(unbound.is_empty(), "roles bound to nobody: {unbound:?}");
    out
}

fn wanted() -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for a in ACCESS {
        let names = if a.names.is_empty() {
            &["*"][..]
        } else {
            a.names
        };
        for v in a.verbs {
            for n in names {
                out.insert((
                    a.program.to_owned(),
                    a.namespace.unwrap_or("*").to_owned(),
                    a.group.to_owned(),
                    a.resource.to_owned(),
                    (*v).to_owned(),
                    (*n).to_owned(),
                ));
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_what_each_program_calls() {
    let want = wanted();
    for (dir, docs) in render_all() {
        if rel(&dir) == "deploy/crds" {
            continue;
        }
        let got = granted(&docs);
        let extra: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{}: RBAC differs from the ACCESS table\n  granted but not called: {extra:#?}\n  \
             called but not granted: {missing:#?}",
            rel(&dir)
        );
        for o in &docs {
            for r in o["rules"].as_array().into_iter().flatten() {
                for field in ["apiGroups", "resources", "verbs"] {
                    assert!(
                        !strs(&r[field]).contains(&"*"),
                        "{}: wildcard {field}",
                        id(o)
                    );
                }
            }
        }
    }
}

/// The path of a binary in the Cargo target directory, checked to be newer than every source
/// file cargo recorded for it (its `.d` dep-info file), so an old build cannot answer.
fn binary(program: &str) -> PathBuf {
    // tests run from target/<profile>/deps/
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join(program);
    let build = "cargo build -p leafbridge-controller -p leafbridge-speaker -p leafbridge-dns";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "prerequisite missing: {} is not built; run `{build}` (cargo test --workspace \
                 builds it)",
                bin.display()
            )
        });
    let deps = std::fs::read_to_string(dir.join(format!("{program}.d"))).unwrap_or_default();
    let sources = deps
        .split_once(": ")
        .map(|(_, s)| s.replace("\\ ", "\u{0}"))
        .unwrap_or_default();
    for src in sources.split_whitespace() {
        let src = src.replace('\u{0}', " ");
        if let Ok(t) = std::fs::metadata(&src).and_then(|m| m.modified()) {
            assert!(
                t <= built,
                "prerequisite stale: {} is older than {src}; run `{build}`",
                bin.display()
            );
        }
    }
    bin
}

/// The `--long` flags and `[env: NAME=]` variables in `program --help`.
fn help(program: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(binary(program))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} --help failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let flags = long_flags(&text);
    let env = text
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    (flags, env)
}

/// (rendering, workload, container) for every container of every Deployment and DaemonSet.
fn containers(all: &[(PathBuf, Vec<Value>)]) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (dir, docs) in all {
        for o in docs
            .iter()
            .filter(|o| matches!(kind(o), "Deployment" | "DaemonSet"))
        {
            for c in o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                out.push((rel(dir), id(o), c.clone()));
            }
        }
    }
    out
}

fn program_of(c: &Value) -> &str {
    let cmd = strs(&c["command"]);
    let prog = cmd
        .first()
        .and_then(|p| p.strip_prefix("/usr/local/bin/"))
        .unwrap_or_else(|| panic!("container without /usr/local/bin/<program> command: {c}"));
    assert!(PROGRAMS.contains(&prog), "unknown program {prog}");
    prog
}

#[test]
fn container_args_and_env_are_ones_the_binaries_read() {
    let all = render_all();
    let help: BTreeMap<&str, _> = PROGRAMS.iter().map(|p| (*p, help(p))).collect();
    for (prog, flag, why) in PENDING_FLAGS {
        assert!(
            !help[prog].0.contains(*flag),
            "{prog} now accepts {flag} ({why}): remove it from PENDING_FLAGS"
        );
    }
    for (prog, var, why) in ENV_READ_BY_CODE {
        assert!(
            sources_mention(&crate_dir(prog).join("src"), &format!("\"{var}\"")),
            "ENV_READ_BY_CODE says {prog} reads {var} ({why}), but its sources never name it"
        );
    }
    for (prog, var, why) in PENDING_ENV {
        assert!(
            !help[prog].1.contains(*var)
                && !sources_mention(&crate_dir(prog).join("src"), &format!("\"{var}\"")),
            "{prog} now reads {var} ({why}): remove it from PENDING_ENV"
        );
    }
    let mut checked = 0;
    for (dir, workload, c) in containers(&all) {
        let prog = program_of(&c);
        let (flags, env) = &help[prog];
        for arg in strs(&c["args"]) {
            let flag = arg.split('=').next().unwrap();
            assert!(
                flag.starts_with("--"),
                "{dir} {workload}: write arguments as --flag=value, not {arg:?}"
            );
            let pending = PENDING_FLAGS
                .iter()
                .any(|(p, f, _)| *p == prog && *f == flag);
            assert!(
                flags.contains(flag) || pending,
                "{dir} {workload}: {prog} has no flag {flag} (its --help lists {flags:?})"
            );
            checked += 1;
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let var = e["name"].as_str().unwrap();
            let by_code = ENV_READ_BY_CODE
                .iter()
                .chain(PENDING_ENV)
                .any(|(p, v, _)| *p == prog && *v == var);
            assert!(
                env.contains(var) || by_code,
                "{dir} {workload}: {prog} does not read {var}"
            );
        }
    }
    assert!(checked > 0, "no container arguments found");
}

#[test]
fn containers_run_with_least_privilege_and_probe_their_ops_port() {
    let all = render_all();
    for (dir, workload, c) in containers(&all) {
        let prog = program_of(&c);
        let sc = &c["securityContext"];
        let at = format!("{dir} {workload}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
        assert_ne!(sc["privileged"], true, "{at}");
        assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{at}");
        let added = strs(&sc["capabilities"]["add"]);
        let allowed: &[&str] = if prog == "leafbridge-speaker" {
            &["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]
        } else {
            &[]
        };
        assert_eq!(added, allowed, "{at}: capabilities");
        assert!(
            c["resources"]["requests"]["cpu"].is_string()
                && c["resources"]["requests"]["memory"].is_string(),
            "{at}: resource requests"
        );
        // Both probes hit a named port of this container, the one the ops endpoint listens
        // on (--metrics-address, or ops_listen in the DNS proxy's file).
        let ports: BTreeMap<&str, u64> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        let ops_port = ports["metrics"];
        for (probe, paths) in [
            ("livenessProbe", &["/healthz"][..]),
            ("readinessProbe", &["/readyz", "/healthz"][..]),
        ] {
            let get = &c[probe]["httpGet"];
            assert!(
                paths.contains(&get["path"].as_str().unwrap_or("")),
                "{at}: {probe} {get}"
            );
            assert_eq!(get["port"], "metrics", "{at}: {probe}");
        }
        if prog != "leafbridge-dns" {
            let addr = strs(&c["args"])
                .into_iter()
                .find_map(|a| a.strip_prefix("--metrics-address="))
                .unwrap_or_else(|| panic!("{at}: no --metrics-address"));
            assert!(addr.ends_with(&format!(":{ops_port}")), "{at}: {addr}");
        }
    }
}

/// Kinds whose objects live in a namespace. deploy/ sets every namespace explicitly (no
/// kustomize `namespace:`, which would also stamp one on our cluster-scoped CRD objects).
const NAMESPACED_KINDS: &[&str] = &[
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
    "DaemonSet",
    "Service",
    "ConfigMap",
    "Secret",
    "PodDisruptionBudget",
    "ServiceMonitor",
];

#[test]
fn namespaced_objects_live_in_leafbridge_system_and_others_in_none() {
    for (dir, docs) in render_all() {
        for o in &docs {
            let ns = o["metadata"]["namespace"].as_str();
            if NAMESPACED_KINDS.contains(&kind(o)) {
                assert_eq!(ns, Some(SYSTEM_NS), "{} {}", rel(&dir), id(o));
            } else {
                assert_eq!(ns, None, "{} {}: cluster-scoped", rel(&dir), id(o));
            }
        }
    }
}

#[test]
fn speaker_is_host_network_with_a_persistent_restart_marker() {
    let docs = render(&repo().join("deploy/base"));
    let ds = docs
        .iter()
        .find(|o| kind(o) == "DaemonSet" && name(o) == "leafbridge-speaker")
        .expect("the speaker DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = &pod["containers"][0];
    let dir = strs(&c["args"])
        .into_iter()
        .find_map(|a| a.strip_prefix("--restart-marker-dir="))
        .expect("--restart-marker-dir");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert!(
        vol["hostPath"]["path"].is_string(),
        "the marker must outlive the pod: {vol}"
    );
    let node_name = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
}

#[test]
fn controller_runs_two_replicas_with_unique_lease_identities() {
    let docs = render(&repo().join("deploy/base"));
    let d = docs
        .iter()
        .find(|o| kind(o) == "Deployment" && name(o) == "leafbridge-controller")
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let field = |var: &str| {
        env.iter()
            .find(|e| e["name"] == var)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(field("POD_NAME"), Some(Value::from("metadata.name")));
    assert_eq!(
        field("POD_NAMESPACE"),
        Some(Value::from("metadata.namespace"))
    );
    for pdb in ["leafbridge-controller", "leafbridge-dns"] {
        assert!(
            docs.iter()
                .any(|o| kind(o) == "PodDisruptionBudget" && name(o) == pdb),
            "no PodDisruptionBudget {pdb}"
        );
    }
}

#[test]
fn dns_proxy_is_a_local_load_balancer_service_onto_its_listen_port() {
    for (dir, docs) in render_all() {
        let Some(svc) = docs
            .iter()
            .find(|o| kind(o) == "Service" && name(o) == "leafbridge-dns")
        else {
            continue;
        };
        let at = rel(&dir);
        assert_eq!(svc["spec"]["type"], "LoadBalancer", "{at}");
        assert_eq!(svc["spec"]["loadBalancerClass"], "leafbridge.io/lb", "{at}");
        // Views choose by client address: SNAT (policy Cluster) would hide it.
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local", "{at}");
        let config = dns_config(&docs, &at);
        let c = &docs
            .iter()
            .find(|o| kind(o) == "Deployment" && name(o) == "leafbridge-dns")
            .unwrap()["spec"]["template"]["spec"]["containers"][0];
        let named: BTreeMap<&str, u64> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert_eq!(p["port"], 53, "{at}");
            let target = named[p["targetPort"].as_str().unwrap()];
            assert!(
                config.listen.iter().all(|a| u64::from(a.port()) == target),
                "{at}: Service targets {target}, the proxy listens on {:?}",
                config.listen
            );
        }
        let ops = config.ops_listen.expect("ops_listen is set");
        assert_eq!(u64::from(ops.port()), named["metrics"], "{at}");
    }
}

/// The leafbridge-dns configuration in a rendering, loaded by the proxy's own parser, at the
/// path the Deployment passes with --config.
fn dns_config(docs: &[Value], at: &str) -> leafbridge_dns::config::Config {
    let d = docs
        .iter()
        .find(|o| kind(o) == "Deployment" && name(o) == "leafbridge-dns")
        .unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let path = strs(&c["args"])
        .into_iter()
        .find_map(|a| a.strip_prefix("--config="))
        .expect("--config");
    let (dir, file) = path.rsplit_once('/').unwrap();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{at}: nothing mounted at {dir}"));
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let cm_name = vol["configMap"]["name"].as_str().unwrap();
    let cm = docs
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o) == cm_name)
        .unwrap_or_else(|| panic!("{at}: no ConfigMap {cm_name}"));
    let text = cm["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("{at}: ConfigMap {cm_name} has no key {file}"));
    let config = leafbridge_dns::config::Config::from_yaml(text)
        .unwrap_or_else(|e| panic!("{at}: leafbridge-dns rejects its ConfigMap: {e}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{at}: leafbridge-dns rejects its ConfigMap: {e}"));
    config
}

/// Fields of `orig` that are absent from (or differ in) `round`: what a typed round trip
/// dropped, i.e. fields the type does not have.
fn dropped(orig: &Value, round: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, round) {
        (Value::Object(o), Value::Object(r)) => {
            for (k, v) in o {
                match r.get(k) {
                    Some(rv) => dropped(v, rv, &format!("{path}.{k}"), out),
                    None if v.is_null() => {}
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(o), Value::Array(r)) if o.len() == r.len() => {
            for (i, (a, b)) in o.iter().zip(r).enumerate() {
                dropped(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path} ({a} became {b})")),
    }
}

fn typed<K: serde::Serialize + DeserializeOwned>(o: &Value) -> Result<Vec<String>, String> {
    let k: K = serde_json::from_value(o.clone()).map_err(|e| e.to_string())?;
    let round = serde_json::to_value(&k).unwrap();
    let mut out = Vec::new();
    dropped(o, &round, "", &mut out);
    Ok(out)
}

/// Checks a built-in object against its k8s-openapi type; `None` for kinds it does not know.
fn check_builtin(o: &Value) -> Option<Result<Vec<String>, String>> {
    use k8s_openapi::api::{apps, core, policy, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    Some(match (o["apiVersion"].as_str()?, kind(o)) {
        ("v1", "Namespace") => typed::<core::v1::Namespace>(o),
        ("v1", "ServiceAccount") => typed::<core::v1::ServiceAccount>(o),
        ("v1", "Service") => typed::<core::v1::Service>(o),
        ("v1", "ConfigMap") => typed::<core::v1::ConfigMap>(o),
        ("v1", "Secret") => typed::<core::v1::Secret>(o),
        ("apps/v1", "Deployment") => typed::<apps::v1::Deployment>(o),
        ("apps/v1", "DaemonSet") => typed::<apps::v1::DaemonSet>(o),
        ("policy/v1", "PodDisruptionBudget") => typed::<policy::v1::PodDisruptionBudget>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<rbac::v1::ClusterRole>(o),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<rbac::v1::ClusterRoleBinding>(o)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => typed::<rbac::v1::Role>(o),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => typed::<rbac::v1::RoleBinding>(o),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            typed::<apiext::CustomResourceDefinition>(o)
        }
        _ => return None,
    })
}

/// Validates `v` against a CRD's OpenAPI v3 schema (the subset structural schemas use). A
/// schema keyword this check does not implement is an error, never a silent pass.
fn check_schema(v: &Value, s: &Value, path: &str, out: &mut Vec<String>) {
    const KNOWN: &[&str] = &[
        "type",
        "properties",
        "additionalProperties",
        "items",
        "required",
        "enum",
        "nullable",
        "default",
        "description",
        "format",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "title",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        // CEL rules: evaluated by the API server, and again by the programs that read the
        // kind (the speaker's desired-state validation, `IPPoolSpec::validate`), which have
        // unit tests of their own; this structural check does not evaluate CEL.
        "x-kubernetes-validations",
        // A list map (conditions keyed by type): a merge strategy, nothing to validate.
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    ];
    for k in s.as_object().into_iter().flat_map(|m| m.keys()) {
        if !KNOWN.contains(&k.as_str()) {
            out.push(format!(
                "{path}: schema keyword {k} is not checked here; extend check_schema"
            ));
        }
    }
    if s["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    if v.is_null() {
        if s["nullable"] != true {
            out.push(format!("{path}: null"));
        }
        return;
    }
    if s["x-kubernetes-int-or-string"] == true {
        if !(v.is_i64() || v.is_u64() || v.is_string()) {
            out.push(format!("{path}: {v} is neither integer nor string"));
        }
        return;
    }
    if let Some(e) = s["enum"].as_array()
        && !e.contains(v)
    {
        out.push(format!("{path}: {v} is not one of {e:?}"));
    }
    let number = |out: &mut Vec<String>| {
        let x = v.as_f64().unwrap();
        if s["minimum"].as_f64().is_some_and(|m| x < m)
            || s["maximum"].as_f64().is_some_and(|m| x > m)
        {
            out.push(format!("{path}: {v} is out of range"));
        }
    };
    match s["type"].as_str() {
        Some("object") => {
            let Some(m) = v.as_object() else {
                return out.push(format!("{path}: {v} is not an object"));
            };
            for r in strs(&s["required"]) {
                if !m.contains_key(r) {
                    out.push(format!("{path}.{r}: required"));
                }
            }
            for (k, x) in m {
                let p = format!("{path}.{k}");
                if let Some(ps) = s["properties"].get(k) {
                    check_schema(x, ps, &p, out);
                } else if s["additionalProperties"].is_object() {
                    check_schema(x, &s["additionalProperties"], &p, out);
                } else {
                    out.push(format!("{p}: no such field"));
                }
            }
        }
        Some("array") => match v.as_array() {
            Some(a) => {
                if s["minItems"].as_u64().is_some_and(|m| (a.len() as u64) < m) {
                    out.push(format!("{path}: fewer than {} items", s["minItems"]));
                }
                if s["maxItems"].as_u64().is_some_and(|m| (a.len() as u64) > m) {
                    out.push(format!("{path}: more than {} items", s["maxItems"]));
                }
                for (i, x) in a.iter().enumerate() {
                    check_schema(x, &s["items"], &format!("{path}[{i}]"), out);
                }
            }
            None => out.push(format!("{path}: {v} is not an array")),
        },
        Some("string") if !v.is_string() => out.push(format!("{path}: {v} is not a string")),
        Some("string")
            if s["minLength"]
                .as_u64()
                .is_some_and(|m| (v.as_str().unwrap_or_default().chars().count() as u64) < m) =>
        {
            out.push(format!("{path}: shorter than {}", s["minLength"]))
        }
        Some("string")
            if s["maxLength"]
                .as_u64()
                .is_some_and(|m| (v.as_str().unwrap_or_default().chars().count() as u64) > m) =>
        {
            out.push(format!("{path}: longer than {}", s["maxLength"]))
        }
        Some("boolean") if !v.is_boolean() => out.push(format!("{path}: {v} is not a boolean")),
        Some("integer") if v.is_i64() || v.is_u64() => number(out),
        Some("integer") => out.push(format!("{path}: {v} is not an integer")),
        Some("number") if v.is_number() => number(out),
        Some("number") => out.push(format!("{path}: {v} is not a number")),
        Some("string" | "boolean") => {}
        t => out.push(format!("{path}: schema type {t:?} is not checked here")),
    }
}

/// Schemas of the served versions of the generated CRDs: (apiVersion, kind) → (scope, schema).
fn crd_schemas() -> BTreeMap<(String, String), (String, Value)> {
    let mut out = BTreeMap::new();
    for crd in render(&repo().join("deploy/crds")) {
        let spec = &crd["spec"];
        for v in spec["versions"].as_array().unwrap() {
            out.insert(
                (
                    format!(
                        "{}/{}",
                        spec["group"].as_str().unwrap(),
                        v["name"].as_str().unwrap()
                    ),
                    spec["names"]["kind"].as_str().unwrap().to_owned(),
                ),
                (
                    spec["scope"].as_str().unwrap().to_owned(),
                    v["schema"]["openAPIV3Schema"].clone(),
                ),
            );
        }
    }
    out
}

#[test]
fn every_object_uses_only_fields_that_exist() {
    let schemas = crd_schemas();
    let mut problems = Vec::new();
    let mut crd_objects = 0;
    for (dir, docs) in render_all() {
        for o in &docs {
            let at = format!("{} {}", rel(&dir), id(o));
            let api = o["apiVersion"].as_str().unwrap();
            if let Some((scope, schema)) = schemas.get(&(api.to_owned(), kind(o).to_owned())) {
                crd_objects += 1;
                if scope == "Cluster" && o["metadata"].get("namespace").is_some() {
                    problems.push(format!("{at}: namespace on a cluster-scoped kind"));
                }
                // apiVersion, kind and metadata are the API server's, not the schema's.
                let mut body = o.clone();
                for k in ["apiVersion", "kind", "metadata"] {
                    body.as_object_mut().unwrap().remove(k);
                }
                let mut out = Vec::new();
                check_schema(&body, schema, "", &mut out);
                problems.extend(out.into_iter().map(|p| format!("{at}: {p}")));
            } else if let Some(r) = check_builtin(o) {
                match r {
                    Ok(unknown) => {
                        problems.extend(unknown.into_iter().map(|p| format!("{at}: field {p}")))
                    }
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
            } else if !FOREIGN_KINDS.contains(&(api, kind(o))) {
                problems.push(format!("{at}: kind {api} {} is not checked", kind(o)));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(crd_objects > 0, "no leafbridge.io objects in the examples");
}

#[test]
fn the_schema_check_catches_a_misspelt_field() {
    let schemas = crd_schemas();
    let (_, schema) = &schemas[&("leafbridge.io/v1alpha1".to_owned(), "BGPPeer".to_owned())];
    let mut out = Vec::new();
    let body = serde_json::json!({"spec": {"peerAddress": "192.0.2.1", "peerASN": 65000,
        "myASN": "65001", "holdTime": 9}});
    check_schema(&body, schema, "", &mut out);
    assert_eq!(
        out,
        [
            ".spec.holdTime: no such field",
            ".spec.myASN: \"65001\" is not an integer"
        ]
    );
    let deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x"}, "spec": {"replica": 2, "selector": {}, "template": {}}});
    assert_eq!(
        check_builtin(&deployment).unwrap().unwrap(),
        [".spec.replica"]
    );
}

#[test]
fn containerfile_installs_the_three_binaries_where_the_manifests_run_them() {
    let text = std::fs::read_to_string(repo().join("Containerfile")).expect("Containerfile");
    for p in PROGRAMS {
        assert!(
            text.contains(&format!("/usr/local/bin/{p}")),
            "Containerfile does not install /usr/local/bin/{p}"
        );
    }
    // The build stage needs every workspace member, or cargo cannot load the workspace.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("workspace members in Cargo.toml");
    for m in members.split(',').map(|m| m.trim().trim_matches('"')) {
        if m.is_empty() {
            continue;
        }
        assert!(
            text.lines().any(|l| l.trim() == format!("COPY {m} {m}")),
            "Containerfile does not copy the workspace member {m}"
        );
    }
}

/// Every `--flag` a program accepts, its subcommands' included.
fn all_flags(program: &str) -> BTreeSet<String> {
    let bin = binary(program);
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = run(&["--help"]);
    let subcommands: Vec<String> = top
        .split_once("Commands:")
        .map(|(_, rest)| {
            rest.lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "help")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut texts = vec![top];
    for s in &subcommands {
        texts.push(run(&[s, "--help"]));
    }
    texts
        .iter()
        .flat_map(|t| long_flags(t))
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

fn long_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            w.strip_prefix("--")
                .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_alphabetic()))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn flags_reference_documents_exactly_the_flags_of_each_program() {
    let doc = std::fs::read_to_string(repo().join("docs/flags.md")).unwrap();
    for program in PROGRAMS {
        let section = doc
            .split(&format!("\n## {program}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("docs/flags.md has no section {program}"));
        let section = section.split("\n## ").next().unwrap();
        let documented = long_flags(section);
        let accepted = all_flags(program);
        let pending: BTreeSet<String> = PENDING_FLAGS
            .iter()
            .filter(|(p, _, _)| p == program)
            .map(|(_, f, _)| (*f).to_owned())
            .collect();
        let undocumented: Vec<_> = accepted.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "docs/flags.md does not document {program} {undocumented:?}"
        );
        let unknown: Vec<_> = documented
            .iter()
            .filter(|f| !accepted.contains(*f) && !pending.contains(*f))
            .collect();
        assert!(
            unknown.is_empty(),
            "docs/flags.md documents {program} {unknown:?}, which it does not accept"
        );
    }
}

#[test]
fn documents_link_only_to_files_in_the_repository() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy();
            if p.is_dir() && !matches!(&*name, "target" | ".git") {
                walk(&p, out);
            } else if name.ends_with(".md") {
                out.push(p);
            }
        }
    }
    let mut docs = Vec::new();
    walk(&repo(), &mut docs);
    assert!(docs.len() >= 5, "found only {docs:?}");
    let mut problems = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for target in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            let file = target.split('#').next().unwrap();
            if target.contains("://") || target.starts_with('/') {
                problems.push(format!(
                    "{}: links outside the repository: {target}",
                    rel(doc)
                ));
            } else if !file.is_empty() && !doc.parent().unwrap().join(file).exists() {
                problems.push(format!("{}: broken link {target}", rel(doc)));
            }
        }
        // Paths written out, linked or not: a relative one may not climb above the repository.
        let words = text.split(|c: char| c.is_whitespace() || "`()[]<>\"'".contains(c));
        for path in words.filter(|w| w.starts_with("../")) {
            if !stays_inside(&repo(), doc.parent().unwrap(), path) {
                problems.push(format!(
                    "{}: refers to {path}, outside the repository",
                    rel(doc)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Whether `path`, relative to `dir`, names something inside `root` (resolved without
/// touching the file system).
fn stays_inside(root: &Path, dir: &Path, path: &str) -> bool {
    let mut at: Vec<std::path::Component> = dir.components().collect();
    for c in Path::new(path).components() {
        match c {
            std::path::Component::ParentDir => {
                at.pop();
            }
            std::path::Component::CurDir => {}
            other => at.push(other),
        }
    }
    at.iter().collect::<PathBuf>().starts_with(root)
}

/// Field paths (`spec.a.b`, `status.c`) of a CRD schema, stopping at Kubernetes' own types
/// (label selectors, conditions), which are documented where they come from.
fn field_paths(s: &Value, path: &str, out: &mut BTreeSet<String>) {
    let object = if s["type"] == "array" { &s["items"] } else { s };
    let Some(props) = object["properties"].as_object() else {
        return;
    };
    if props.contains_key("matchLabels") || props.contains_key("lastTransitionTime") {
        return;
    }
    for (k, v) in props {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        out.insert(p.clone());
        field_paths(v, &p, out);
    }
}

#[test]
fn crd_reference_documents_exactly_the_fields_of_each_crd() {
    let doc = std::fs::read_to_string(repo().join("docs/crds.md")).unwrap();
    for crd in render(&repo().join("deploy/crds")) {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        let section = doc
            .split(&format!("\n## {kind}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("docs/crds.md has no section {kind}"));
        let section = section.split("\n## ").next().unwrap();
        let documented: BTreeSet<String> = section
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.starts_with("spec.") || w.starts_with("status."))
            .map(str::to_owned)
            .collect();
        let mut fields = BTreeSet::new();
        for v in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &v["schema"]["openAPIV3Schema"];
            for top in ["spec", "status"] {
                if schema["properties"].get(top).is_some() {
                    field_paths(&schema["properties"][top], top, &mut fields);
                }
            }
        }
        let missing: Vec<_> = fields.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&fields).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "docs/crds.md, {kind}: undocumented fields {missing:?}; documented but absent \
             {unknown:?}"
        );
    }
}

#[test]
fn only_the_speaker_runs_as_root_and_only_it_uses_the_host_network() {
    for (dir, docs) in render_all() {
        for o in docs
            .iter()
            .filter(|o| matches!(kind(o), "Deployment" | "DaemonSet"))
        {
            let pod = &o["spec"]["template"]["spec"];
            let speaker = name(o) == "leafbridge-speaker";
            let at = format!("{} {}", rel(&dir), id(o));
            assert_eq!(pod["hostNetwork"] == true, speaker, "{at}: hostNetwork");
            if !speaker {
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
                for c in pod["containers"].as_array().unwrap() {
                    assert!(
                        c["securityContext"]["runAsUser"] != 0,
                        "{at}: container runs as root"
                    );
                }
            }
        }
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn every_reference_names_an_object_that_is_rendered() {
    for (dir, docs) in render_all() {
        if rel(&dir) == "deploy/crds" {
            continue;
        }
        let at = rel(&dir);
        let has = |k: &str, ns: Option<&str>, n: &str| {
            docs.iter()
                .any(|o| kind(o) == k && name(o) == n && o["metadata"]["namespace"].as_str() == ns)
        };
        let pods: Vec<(&Value, &Value)> = docs
            .iter()
            .filter(|o| matches!(kind(o), "Deployment" | "DaemonSet"))
            .map(|o| (o, &o["spec"]["template"]))
            .collect();
        for (w, pod) in &pods {
            let ns = w["metadata"]["namespace"].as_str();
            assert!(
                labels_match(
                    &w["spec"]["selector"]["matchLabels"],
                    &pod["metadata"]["labels"]
                ),
                "{at} {}: selector does not match its own pods",
                id(w)
            );
            let sa = pod["spec"]["serviceAccountName"].as_str().unwrap();
            assert!(
                has("ServiceAccount", ns, sa),
                "{at} {}: no ServiceAccount {sa}",
                id(w)
            );
            for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
                if let Some(cm) = v["configMap"]["name"].as_str() {
                    assert!(
                        has("ConfigMap", ns, cm),
                        "{at} {}: no ConfigMap {cm}",
                        id(w)
                    );
                }
            }
        }
        for o in &docs {
            match kind(o) {
                "Service" => {
                    let selected: Vec<&&Value> = pods
                        .iter()
                        .map(|(_, p)| p)
                        .filter(|p| labels_match(&o["spec"]["selector"], &p["metadata"]["labels"]))
                        .collect();
                    assert!(!selected.is_empty(), "{at} {}: selects no pods", id(o));
                    for port in o["spec"]["ports"].as_array().unwrap() {
                        if let Some(target) = port["targetPort"].as_str() {
                            assert!(
                                selected.iter().all(|p| {
                                    p["spec"]["containers"].as_array().unwrap().iter().any(|c| {
                                        c["ports"]
                                            .as_array()
                                            .into_iter()
                                            .flatten()
                                            .any(|cp| cp["name"] == target)
                                    })
                                }),
                                "{at} {}: pods have no port {target}",
                                id(o)
                            );
                        }
                    }
                }
                "PodDisruptionBudget" => assert!(
                    pods.iter().any(|(_, p)| labels_match(
                        &o["spec"]["selector"]["matchLabels"],
                        &p["metadata"]["labels"]
                    )),
                    "{at} {}: selects no pods",
                    id(o)
                ),
                "ServiceMonitor" => {
                    let services: Vec<&Value> = docs
                        .iter()
                        .filter(|s| {
                            kind(s) == "Service"
                                && labels_match(
                                    &o["spec"]["selector"]["matchLabels"],
                                    &s["metadata"]["labels"],
                                )
                        })
                        .collect();
                    assert!(!services.is_empty(), "{at} {}: selects no Service", id(o));
                    for e in o["spec"]["endpoints"].as_array().unwrap() {
                        assert!(
                            services.iter().all(|s| s["spec"]["ports"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["name"] == e["port"])),
                            "{at} {}: port {} missing on a selected Service",
                            id(o),
                            e["port"]
                        );
                    }
                }
                "ClusterRoleBinding" | "RoleBinding" => {
                    for s in o["subjects"].as_array().unwrap() {
                        let sa = s["name"].as_str().unwrap();
                        assert!(
                            has("ServiceAccount", s["namespace"].as_str(), sa),
                            "{at} {}: no ServiceAccount {sa}",
                            id(o)
                        );
                    }
                }
                "BGPPeer" => {
                    let secret = &o["spec"]["passwordSecret"];
                    if let Some(n) = secret["name"].as_str() {
                        assert!(
                            has("Secret", secret["namespace"].as_str(), n),
                            "{at} {}: no Secret {n}",
                            id(o)
                        );
                    }
                }
                "BGPAdvertisement" => {
                    for (field, k) in [("peers", "BGPPeer"), ("ipPools", "IPPool")] {
                        for n in strs(&o["spec"][field]) {
                            assert!(has(k, None, n), "{at} {}: no {k} {n}", id(o));
                        }
                    }
                }
                _ => {}
            }
            if let Some(pool) = o["metadata"]["annotations"]["leafbridge.io/ip-pool"].as_str() {
                assert!(
                    has("IPPool", None, pool),
                    "{at} {}: no IPPool {pool}",
                    id(o)
                );
            }
        }
    }
}
