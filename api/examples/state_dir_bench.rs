//! State-directory load benchmark: N Services in F multi-document files, one IPPool, and the real
//! `leafbridge-controller --state-dir` binary; times until every Service has an address in its
//! status on disk and reports allocations persisted per second, CPU and peak RSS of the
//! controller.
//!
//! ```text
//! cargo build --release -p leafbridge-controller
//! cargo run --release -p leafbridge-api --example state_dir_bench -- [SERVICES] [FILES] [CONTROLLER]
//! ```
//! Defaults: 10000 Services, 100 files, `target/release/leafbridge-controller`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use clap::Parser as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the controller by PID, even on panic.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (CPU seconds user+system, peak RSS in KiB) of `pid`.
fn usage(pid: u32, tck: f64) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, hwm))
}

fn svc(i: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: bench\nspec:\n  type: LoadBalancer\n  loadBalancerClass: leafbridge.io/lb\n  selector:\n    app: svc-{i}\n  ports:\n  - port: 80\n    protocol: TCP\n"
    )
}

fn allocated(dir: &Path, files: usize) -> usize {
    (0..files)
        .map(|f| {
            std::fs::read_to_string(dir.join(format!("services-{f:03}.yaml")))
                .map(|t| t.matches("ingress:").count())
                .unwrap_or(0)
        })
        .sum()
}

/// State-directory load benchmark with the real controller binary.
#[derive(clap::Parser)]
struct Args {
    /// Services to write.
    #[arg(default_value_t = 10_000)]
    services: usize,
    /// Files to spread them over.
    #[arg(default_value_t = 100)]
    files: usize,
    /// The controller binary (default: target/release/leafbridge-controller).
    controller: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let Args {
        services,
        files,
        controller,
    } = Args::parse();
    let controller = controller.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/leafbridge-controller")
    });
    anyhow::ensure!(
        controller.exists(),
        "controller binary {} missing: run `cargo build --release -p leafbridge-controller`",
        controller.display()
    );
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("pool.yaml"),
        "apiVersion: leafbridge.io/v1alpha1\nkind: IPPool\nmetadata: {name: bench}\nspec:\n  addresses: [100.64.0.0/16]\n",
    )?;
    let per_file = services.div_ceil(files);
    for f in 0..files {
        let text: Vec<String> = (f * per_file..((f + 1) * per_file).min(services))
            .map(svc)
            .collect();
        std::fs::write(
            dir.join(format!("services-{f:03}.yaml")),
            text.join("---\n"),
        )?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let tck = clk_tck();
    let start = Instant::now();
    let child = Proc(
        Command::new(&controller)
            .args(["--state-dir", dir.to_str().unwrap_or_default()])
            .args(["--metrics-address", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = child.0.id();
    let (mut cpu, mut rss) = (0.0, 0);
    let mut first = None;
    let mut done = 0;
    let deadline = Duration::from_secs(300);
    while start.elapsed() < deadline {
        if let Some((c, r)) = usage(pid, tck) {
            (cpu, rss) = (c, r);
        }
        done = allocated(&dir, files);
        if done > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if done >= services {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = start.elapsed();
    if let Some((c, r)) = usage(pid, tck) {
        (cpu, rss) = (c, r);
    }
    drop(child);
    let secs = total.as_secs_f64();
    println!(
        "state_dir_bench: {services} Services in {files} files, controller {}",
        controller.display()
    );
    println!("  persisted:            {done}/{services}");
    println!(
        "  first status on disk: {:.3} s",
        first.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    println!("  all persisted after:  {secs:.3} s");
    println!("  allocations/s:        {:.0}", done as f64 / secs);
    println!(
        "  controller CPU:       {cpu:.2} s ({:.2} cores on average)",
        cpu / secs
    );
    println!("  controller peak RSS:  {:.1} MiB", rss as f64 / 1024.0);
    anyhow::ensure!(
        done >= services,
        "not every Service was allocated within {deadline:?}"
    );
    Ok(())
}
