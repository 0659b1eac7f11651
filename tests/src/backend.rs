//! Traffic through the fabric: a TCP backend standing in for a pod in a node namespace, a
//! prober in the office that connects to an address many times a second, and one-shot requests.
//!
//! Both run as threads of the test process that enter the namespace with `setns(2)`: a
//! network namespace is per thread, and sockets keep the namespace they were created in. No
//! extra binary, no `ip netns exec` child to end, and the prober's clock is the test's.
//!
//! ```no_run
//! use std::time::Duration;
//! use leafbridge_tests::backend::{Backend, Prober};
//! use leafbridge_tests::fabric::Fabric;
//! let f = Fabric::new("doc", 2);
//! // kube-proxy makes a Service address reachable on every node: here it is on `lo`.
//! f.nodes[0].add_addr("lo", "203.0.113.10/32");
//! let _web = Backend::start(&f.nodes[0], 8080, "node0");
//! let probe = Prober::start(&f.office, "203.0.113.10:8080".parse().unwrap(), 100);
//! std::thread::sleep(Duration::from_secs(2));
//! let report = probe.stop();
//! assert_eq!(report.failures, 0, "{report}");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// Moves the calling thread into `ns` (a no-op for the host namespace).
fn enter(ns: &Netns) -> std::io::Result<()> {
    let Some(name) = ns.name() else {
        return Ok(());
    };
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs `f` on a fresh thread inside `ns` and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.clone();
    std::thread::spawn(move || {
        enter(&ns).unwrap_or_else(|e| panic!("setns into {:?}: {e}", ns.name()));
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A TCP server on `[::]:PORT` (dual stack: IPv4 clients too, the namespace default) in a
/// namespace that writes its `reply` (the node's name) to every connection and closes it:
/// whichever address of the node a client reached (LoadBalancer IP, pod IP, ClusterIP on
/// `lo`), the answer says which node served.
#[derive(Debug)]
pub struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

impl Backend {
    #[track_caller]
    pub fn start(ns: &Netns, port: u16, reply: &str) -> Backend {
        let stop = Arc::new(AtomicBool::new(false));
        let l = in_netns(ns, move || TcpListener::bind(("::", port)))
            .unwrap_or_else(|e| panic!("backend bind [::]:{port} in {:?}: {e}", ns.name()));
        l.set_nonblocking(true).expect("nonblocking listener");
        let flag = stop.clone();
        let reply = format!("{reply}\n");
        let thread = std::thread::spawn(move || serve(l, &reply, &flag));
        Backend {
            stop,
            thread: Some(thread),
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting (a pod going away).
    pub fn stop(self) {}
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(l: TcpListener, reply: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(reply.as_bytes());
                let _ = s.shutdown(Shutdown::Write);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One connection: connect (within `timeout`), read the reply to its end, return it trimmed.
pub fn request(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if out.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed without a reply",
        ));
    }
    Ok(out.trim().to_string())
}

/// [`request`] from inside `ns`.
pub fn request_from(ns: &Netns, addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    in_netns(ns, move || request(addr, timeout))
}

/// What a [`Prober`] saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    /// The longest time between two successful connections (or from the start to the first).
    pub longest_gap: Duration,
    /// How long the prober ran.
    pub elapsed: Duration,
    /// Replies (the serving node's name) and how often each came.
    pub served_by: BTreeMap<String, u64>,
    /// The first few failures, with the time since the start.
    pub first_errors: Vec<(Duration, String)>,
}

impl ProbeReport {
    /// Connection attempts per second.
    pub fn rate(&self) -> f64 {
        self.attempts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} attempts in {:.1?} ({:.0}/s): {} ok, {} failed, longest gap {:?}, served by {:?}",
            self.attempts,
            self.elapsed,
            self.rate(),
            self.successes,
            self.failures,
            self.longest_gap,
            self.served_by
        )?;
        if !self.first_errors.is_empty() {
            write!(f, ", first errors: {:?}", self.first_errors)?;
        }
        Ok(())
    }
}

/// TCP connects from a namespace to one address at a fixed rate until stopped. Each attempt
/// must connect and read the backend's reply within 1 s; anything else is a failure.
#[derive(Debug)]
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProbeReport>>,
}

impl Prober {
    /// Starts probing `addr` from `ns` at `per_second` attempts a second (sequential: an
    /// attempt that takes longer delays the next one, and the report's rate shows it).
    #[track_caller]
    pub fn start(ns: &Netns, addr: SocketAddr, per_second: u32) -> Prober {
        assert!(per_second > 0);
        let stop = Arc::new(AtomicBool::new(false));
        let ns = ns.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&ns).unwrap_or_else(|e| panic!("setns into {:?}: {e}", ns.name()));
            probe(addr, Duration::from_secs(1) / per_second, &flag)
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns the report.
    pub fn stop(mut self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("prober running")
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe(addr: SocketAddr, interval: Duration, stop: &AtomicBool) -> ProbeReport {
    let start = Instant::now();
    let mut r = ProbeReport::default();
    let mut last_ok = start;
    let mut next = start;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        r.attempts += 1;
        match request(addr, Duration::from_secs(1)) {
            Ok(who) => {
                let now = Instant::now();
                r.longest_gap = r.longest_gap.max(now - last_ok);
                last_ok = now;
                r.successes += 1;
                *r.served_by.entry(who).or_default() += 1;
            }
            Err(e) => {
                r.failures += 1;
                if r.first_errors.len() < 5 {
                    r.first_errors.push((start.elapsed(), e.to_string()));
                }
            }
        }
    }
    let end = Instant::now();
    r.longest_gap = r.longest_gap.max(end - last_ok);
    r.elapsed = end - start;
    r
}
