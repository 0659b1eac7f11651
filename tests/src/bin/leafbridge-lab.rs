//! `leafbridge-lab up | status | down`: the whole of leafbridge on one machine, in network
//! namespaces (see `leafbridge_tests::lab` and the README). Run as root; `tests/lab` builds
//! and runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use leafbridge_tests::cluster::LeafKind;
use leafbridge_tests::lab;

const USAGE: &str = "\
usage: leafbridge-lab up     [--name NAME] [--dir DIR] [--bin-dir DIR] [--frr] [--no-install]
       leafbridge-lab status [--dir DIR]
       leafbridge-lab down   [--dir DIR] [--keep-files]

  --name NAME     namespaces are lbl-NAME-office, lbl-NAME-leaf, lbl-NAME-node0.. (default lab)
  --dir DIR       the lab's files: state directory, configs, logs, the record of what runs
                  (default /var/tmp/leafbridge-lab)
  --bin-dir DIR   take the three programs from DIR (e.g. target/debug) instead of building
                  them with `cargo build --release`
  --frr           FRR (bgpd + zebra) as the leaf router instead of BIRD 2
  --no-install    fail naming missing Debian packages instead of installing them
  --keep-files    down: keep the lab directory (logs, state) instead of removing it";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leafbridge-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    let mut name = "lab".to_string();
    let mut dir = PathBuf::from("/var/tmp/leafbridge-lab");
    let mut bin_dir = None;
    let mut leaf = LeafKind::Bird;
    let mut install = true;
    let mut keep_files = false;
    let mut port = None;
    let mut reply = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--name" => name = value()?,
            "--dir" => dir = PathBuf::from(value()?),
            "--bin-dir" => bin_dir = Some(PathBuf::from(value()?)),
            "--frr" => leaf = LeafKind::Frr,
            "--no-install" => install = false,
            "--keep-files" => keep_files = true,
            "--port" => port = Some(value()?),
            "--reply" => reply = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    match cmd.as_str() {
        "up" => {
            let info = lab::up(&lab::UpOptions {
                name,
                dir,
                bin_dir,
                leaf,
                install_packages: install,
            })?;
            print!("{}", lab::summary(&info, "tests/lab"));
            Ok(())
        }
        "status" => {
            print!("{}", lab::status(&dir)?);
            Ok(())
        }
        "down" => {
            let t = lab::down(&dir, keep_files)?;
            println!(
                "ended {} processes ({} more found in the namespaces), deleted {} namespaces, removed {} files outside {}",
                t.ended.len(),
                t.ended_in_namespaces.len(),
                t.namespaces.len(),
                t.files.len(),
                dir.display()
            );
            if keep_files {
                println!("kept {} (logs, state)", dir.display());
            } else if !dir.exists() {
                println!("removed {}", dir.display());
            }
            Ok(())
        }
        // Started by `up` in each node namespace: the HTTP backend standing in for a pod.
        "backend" => {
            let port: u16 = port
                .ok_or("backend needs --port")?
                .parse()
                .map_err(|e| format!("--port: {e}"))?;
            let reply = reply.ok_or("backend needs --reply")?;
            lab::serve_backend(port, &reply).map_err(|e| format!("backend on port {port}: {e}"))
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}
