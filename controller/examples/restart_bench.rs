//! The restart experiment: N Services on a state directory, the real `leafbridge-controller`
//! killed (SIGKILL) and restarted R times at random moments while another process creates,
//! deletes and moves Services between files (a move is two steps: out of one file, into
//! another 100 ms later). Prints the time from each restart until every Service, including
//! one created right after the restart, has an address, and the number of address changes of
//! surviving Services (goal: 0).
//!
//! ```text
//! cargo build --release -p leafbridge-controller --bin leafbridge-controller --example restart_bench
//! target/release/examples/restart_bench [--services 10000] [--files 100] [--restarts 20]
//! ```
//!
//! The editing process takes the state directory's write lock (`.leafbridge/write.lock`) for
//! each read-modify-write, as any tool sharing the directory with leafbridge should; the
//! controller's status writes serialise on the same lock.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use leafbridge_api::state::dir::{META_DIR, list_manifest_files, parse_documents};
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    #[arg(long, default_value_t = 100)]
    files: usize,
    #[arg(long, default_value_t = 20)]
    restarts: usize,
    /// The controller binary.
    #[arg(long, default_value = "target/release/leafbridge-controller")]
    controller: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Kills the controller by PID, even on panic.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator (xorshift): the same seed, the same history.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn svc(i: usize) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "leafbridge.io/lb",
                 "selector": {"app": format!("svc-{i}")}, "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}

fn render(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| leafbridge_api::yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Read-modify-write of one manifest under the state directory's write lock, replaced
/// atomically.
fn edit(dir: &Path, file: &Path, f: impl FnOnce(&mut Vec<Value>)) {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(META_DIR).join("write.lock"))
        .expect("write lock");
    lock.lock().expect("flock");
    let mut docs = fs::read(file)
        .ok()
        .and_then(|c| parse_documents(&c).ok())
        .unwrap_or_default();
    f(&mut docs);
    let tmp = file.with_file_name(format!(
        ".{}.bench-tmp",
        file.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&tmp, render(&docs)).expect("write");
    File::open(&tmp).and_then(|f| f.sync_all()).ok();
    fs::rename(&tmp, file).expect("rename");
}

/// Service name -> ingress addresses, from every manifest.
fn addresses(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for f in list_manifest_files(dir).unwrap_or_default() {
        let Some(docs) = fs::read(&f).ok().and_then(|c| parse_documents(&c).ok()) else {
            continue;
        };
        for d in docs.iter().filter(|d| d["kind"] == "Service") {
            let ips: Vec<String> = d["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["ip"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.insert(d["metadata"]["name"].as_str().unwrap_or("").to_owned(), ips);
        }
    }
    out
}

fn start(controller: &Path, dir: &Path, log: &Path) -> Proc {
    let log = File::create(log).expect("log");
    Proc(
        Command::new(controller)
            .args(["--state-dir", dir.to_str().unwrap()])
            .args(["--metrics-address", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start leafbridge-controller (build it first, see --help)"),
    )
}

/// Compare what every surviving Service has now with what it had first; returns the number
/// of Services whose address changed and of addresses shown by two Services.
fn check(
    seen: &mut BTreeMap<String, Vec<String>>,
    now: &BTreeMap<String, Vec<String>>,
) -> (usize, usize) {
    seen.retain(|k, _| now.contains_key(k));
    let mut changed = 0;
    for (k, ips) in now.iter().filter(|(_, v)| !v.is_empty()) {
        match seen.get(k) {
            Some(old) if old != ips => {
                changed += 1;
                seen.insert(k.clone(), ips.clone());
            }
            Some(_) => {}
            None => {
                seen.insert(k.clone(), ips.clone());
            }
        }
    }
    let mut by_ip: BTreeMap<&String, usize> = BTreeMap::new();
    for ip in now.values().flatten() {
        *by_ip.entry(ip).or_default() += 1;
    }
    (changed, by_ip.values().filter(|n| **n > 1).count())
}

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    fs::create_dir_all(dir.join(META_DIR)).unwrap();
    fs::write(
        dir.join("pool.yaml"),
        "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {name: bench}\nspec:\n  addresses: [100.64.0.0/16]\n",
    )
    .unwrap();
    let files: Vec<PathBuf> = (0..args.files)
        .map(|f| dir.join(format!("svcs-{f:03}.yaml")))
        .collect();
    for (f, path) in files.iter().enumerate() {
        let docs: Vec<Value> = (0..args.services)
            .filter(|i| i % args.files == f)
            .map(svc)
            .collect();
        fs::write(path, render(&docs)).unwrap();
    }
    let log = tmp.path().join("controller.log");
    let mut ctl = start(&args.controller, &dir, &log);
    let t = Instant::now();
    let all_have = |m: &BTreeMap<String, Vec<String>>| m.values().all(|v| !v.is_empty());
    loop {
        let m = addresses(&dir);
        if m.len() >= args.services && all_have(&m) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "no first allocation in 10 min"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{} Services in {} files allocated in {:.2} s",
        args.services,
        args.files,
        t.elapsed().as_secs_f64()
    );
    let mut seen = addresses(&dir);

    // The editor: creates, deletes and moves Services until told to stop; pauses on request
    // (between operations) so that reconcile times are measured on a quiet directory.
    let stop = Arc::new(AtomicBool::new(false));
    let pause = Arc::new(AtomicBool::new(false));
    let paused = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(Mutex::new([0usize; 3]));
    let editor = {
        let (dir, files) = (dir.clone(), files.clone());
        let (stop, pause, paused, ops) = (stop.clone(), pause.clone(), paused.clone(), ops.clone());
        let (mut next, seed) = (args.services, args.seed);
        std::thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut alive: BTreeSet<usize> = (0..next).collect();
            let mut file_of: BTreeMap<usize, usize> =
                (0..next).map(|i| (i, i % files.len())).collect();
            while !stop.load(Ordering::SeqCst) {
                if pause.load(Ordering::SeqCst) {
                    paused.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                paused.store(false, Ordering::SeqCst);
                let pick = |rng: &mut Rng, alive: &BTreeSet<usize>| {
                    *alive.iter().nth(rng.below(alive.len())).unwrap()
                };
                match rng.below(10) {
                    0..=4 => {
                        let f = rng.below(files.len());
                        edit(&dir, &files[f], |d| d.push(svc(next)));
                        alive.insert(next);
                        file_of.insert(next, f);
                        next += 1;
                        ops.lock().unwrap()[0] += 1;
                    }
                    5..=6 => {
                        let i = pick(&mut rng, &alive);
                        let name = format!("svc-{i}");
                        edit(&dir, &files[file_of[&i]], |d| {
                            d.retain(|x| x["metadata"]["name"] != name)
                        });
                        alive.remove(&i);
                        file_of.remove(&i);
                        ops.lock().unwrap()[1] += 1;
                    }
                    _ => {
                        let i = pick(&mut rng, &alive);
                        let name = format!("svc-{i}");
                        let (from, to) = (file_of[&i], rng.below(files.len()));
                        let mut moved = None;
                        edit(&dir, &files[from], |d| {
                            if let Some(p) = d.iter().position(|x| x["metadata"]["name"] == name) {
                                moved = Some(d.remove(p));
                            }
                        });
                        std::thread::sleep(Duration::from_millis(100));
                        if let Some(doc) = moved {
                            edit(&dir, &files[to], |d| d.push(doc));
                            file_of.insert(i, to);
                        }
                        ops.lock().unwrap()[2] += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut rng = Rng(args.seed | 1);
    let (mut changes, mut worst_dup) = (0, 0);
    println!("restart  services  reconcile_s  address_changes  shared_by_two");
    for r in 1..=args.restarts {
        // Let the editor work for a random 0.5-3 s, then kill the controller mid-flight.
        std::thread::sleep(Duration::from_millis(500 + rng.below(2500) as u64));
        drop(ctl);
        ctl = start(&args.controller, &dir, &log);
        let t = Instant::now();
        pause.store(true, Ordering::SeqCst);
        while !paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A Service created right after the restart: reconciled means it has an address too.
        let probe = 100_000_000 + r;
        edit(&dir, &files[0], |d| d.push(svc(probe)));
        let now = loop {
            let m = addresses(&dir);
            if m.get(&format!("svc-{probe}"))
                .is_some_and(|v| !v.is_empty())
                && all_have(&m)
            {
                break m;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "restart {r}: not reconciled in 5 min"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let took = t.elapsed().as_secs_f64();
        let (c, dup) = check(&mut seen, &now);
        changes += c;
        worst_dup = worst_dup.max(dup);
        println!("{r:>7}  {:>8}  {took:>11.2}  {c:>15}  {dup:>13}", now.len());
        pause.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    editor.join().unwrap();
    let [created, deleted, moved] = *ops.lock().unwrap();
    println!(
        "edits during the run: {created} created, {deleted} deleted, {moved} moved between files"
    );
    println!(
        "address changes of surviving Services: {changes} (goal 0); most addresses shown by two Services at once: {worst_dup}"
    );
    drop(ctl);
}
