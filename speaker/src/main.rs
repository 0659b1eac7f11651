//! `leafbridge-speaker`: the BGP speaker. `--config FILE` runs it standalone from a YAML file.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "leafbridge-speaker",
    version,
    about = "BGP speaker that announces what a node should carry"
)]
struct Args {
    /// Standalone mode: YAML file with local AS, router id, peers and prefixes (reloaded on
    /// change and on SIGHUP).
    #[arg(long, env = "LEAFBRIDGE_SPEAKER_CONFIG")]
    config: PathBuf,
    /// Start as a restarting speaker: set the graceful-restart Restart State bit (RFC 4724).
    #[arg(long)]
    restarting: bool,
    /// Directory for the graceful-restart marker: a graceful shutdown leaves it, and a start
    /// within the Restart Time then sets the Restart State bit by itself.
    #[arg(long, env = "LEAFBRIDGE_SPEAKER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    leafbridge_api::ops::init_tracing(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leafbridge-speaker: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let opts = leafbridge_speaker::standalone::Options {
        config: args.config,
        restarting: args.restarting,
        state_dir: args.state_dir,
    };
    match runtime.block_on(leafbridge_speaker::standalone::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "leafbridge-speaker failed");
            std::process::ExitCode::FAILURE
        }
    }
}
