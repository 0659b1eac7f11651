//! Memory of the state-directory backend alone: N Services in F multi-document files (the shape
//! leafbridge-dns's benchmark uses), watched as leafbridge-dns watches them (Service,
//! EndpointSlice, Pod; events consumed and dropped, as a consumer with its own index would).
//! Prints this process's RSS and peak RSS before the watches start, after the initial listing
//! and after one file was edited (one Service changed), with the events each step delivered.
//!
//! ```text
//! cargo run --release -p leafbridge-api --example state_dir_rss -- [SERVICES] [FILES]
//! ```
//! Defaults: 10000 Services in 100 files (one namespace per file).
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use clap::Parser as _;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use leafbridge_api::state::{StateObject, StateSource};
use tokio::sync::mpsc;

/// (RSS, peak RSS) of this process in MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn services(ns: usize, per_file: usize, edited: bool) -> String {
    let mut y = String::new();
    for i in 0..per_file {
        // The edit changes one Service's port.
        let port = if edited && i == 0 { 8080 } else { 80 };
        let ip = format!("10.{}.{}.{}", 96 + ns / 256, ns % 256, i % 250 + 1);
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{ns}}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: {port}, protocol: TCP}}]}}\n"
        );
    }
    y
}

/// Drain one kind's watch, reporting (kind, events) after InitDone and after each later batch.
fn drain<K: StateObject>(source: &StateSource, tx: mpsc::UnboundedSender<(&'static str, u64)>) {
    let mut stream = source.watch::<K>();
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("?");
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut listed = false;
        loop {
            // Events of one change arrive together: report once the stream pauses.
            let next = if listed {
                tokio::time::timeout(Duration::from_millis(50), stream.next()).await
            } else {
                Ok(stream.next().await)
            };
            match next {
                Ok(Some(Ok(ev))) => {
                    n += 1;
                    if matches!(ev, Event::InitDone) {
                        listed = true;
                        let _ = tx.send((kind, std::mem::take(&mut n)));
                    }
                }
                Ok(Some(Err(e))) => eprintln!("{kind} watch error: {e}"),
                Ok(None) => return,
                Err(_) if n > 0 => {
                    let _ = tx.send((kind, std::mem::take(&mut n)));
                }
                Err(_) => {}
            }
        }
    });
}

/// Memory of the state-directory backend alone, watched as leafbridge-dns watches it.
#[derive(clap::Parser)]
struct Args {
    /// Services to write.
    #[arg(default_value_t = 10_000)]
    services: usize,
    /// Files to spread them over (one namespace per file).
    #[arg(default_value_t = 100)]
    files: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        services: count,
        files,
    } = Args::parse();
    let per_file = count.div_ceil(files);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir)?;
    for f in 0..files {
        std::fs::write(
            dir.join(format!("ns-{f}.yaml")),
            services(f, per_file, false),
        )?;
    }
    println!(
        "state_dir_rss: {count} Services in {files} files; watches: Service, EndpointSlice, Pod"
    );
    let (r, p) = rss();
    println!("  before watching:  RSS {r:6.1} MiB, peak {p:6.1} MiB");

    let start = Instant::now();
    let source = StateSource::dir(&dir)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    drain::<Service>(&source, tx.clone());
    drain::<EndpointSlice>(&source, tx.clone());
    drain::<Pod>(&source, tx);
    let mut events = vec![];
    for _ in 0..3 {
        events.push(
            rx.recv()
                .await
                .ok_or_else(|| anyhow::anyhow!("watch ended"))?,
        );
    }
    let (r, p) = rss();
    println!(
        "  listed in {:>6.1?}: RSS {r:6.1} MiB, peak {p:6.1} MiB; events {events:?}",
        start.elapsed()
    );

    let start = Instant::now();
    std::fs::write(dir.join("ns-0.yaml"), services(0, per_file, true))?;
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .map_err(|_| anyhow::anyhow!("the edit was not seen within 10 s"))?;
    let (r, p) = rss();
    println!(
        "  edit seen {:>6.1?}: RSS {r:6.1} MiB, peak {p:6.1} MiB; events {:?}",
        start.elapsed(),
        ev.into_iter().collect::<Vec<_>>()
    );
    Ok(())
}
