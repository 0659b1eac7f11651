//! hickory's own forwarder, for measuring next to leafbridge-dns (measured before deciding
//! whether to use it). Nothing of leafbridge-dns is used: a
//! hickory-server `Catalog` whose root zone `.` is a `ForwardZoneHandler` (hickory-resolver
//! underneath, with its cache), served over UDP and TCP by `hickory_server::Server` on a
//! tokio runtime with one worker thread, as the other servers in `dnsperf_bench` get.
//!
//! ```text
//! cargo build --release -p leafbridge-dns --examples
//! target/release/examples/hickory_forwarder --port 5300 --upstream 127.0.0.1:5301
//! ```

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hickory_server::Server;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::Catalog;

/// Cache entries: leafbridge-dns's default `cache.max_entries`, so neither cache evicts the
/// benchmark's hot names (hickory's default is 8,192).
const CACHE_SIZE: u64 = 100_000;

#[derive(Debug, Parser)]
#[command(about = "hickory-server forwarding everything to one upstream, with its cache")]
struct Args {
    /// UDP and TCP port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The upstream resolver: `ADDR:PORT`, or a port on 127.0.0.1.
    #[arg(long, value_parser = parse_upstream)]
    upstream: SocketAddr,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<u16>().map(|p| (Ipv4Addr::LOCALHOST, p).into()))
        .map_err(|_| format!("not ADDR:PORT or a port: {s:?}"))
}

fn forward_zone(upstream: SocketAddr) -> Result<ForwardZoneHandler, String> {
    // UDP, with TCP when an answer is truncated (RFC 7766 section 5), on the upstream's port.
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut c| {
            c.port = upstream.port();
            c
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.cache_size = CACHE_SIZE;
    let config = ForwardConfig {
        name_servers: vec![NameServerConfig::new(upstream.ip(), true, connections)],
        options: Some(options),
    };
    ForwardZoneHandler::builder_tokio(config)
        .with_origin(Name::root())
        .build()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    leafbridge_api::ops::init_tracing(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let zone = forward_zone(args.upstream).map_err(anyhow::Error::msg)?;
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(zone)]);

        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
        let mut server = Server::new(catalog);
        server.register_socket(tokio::net::UdpSocket::bind(listen).await?);
        server.register_listener(
            tokio::net::TcpListener::bind(listen).await?,
            Duration::from_secs(5),
            32,
        );
        tracing::info!(%listen, upstream = %args.upstream, "hickory forwarder listening (UDP and TCP)");
        server.block_until_done().await?;
        Ok(())
    })
}
