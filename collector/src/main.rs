//! `vigie-collector` command line: load and validate the configuration (exit 64 before any port
//! is bound), bind, run until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vigie_collector::{config, server};

const EX_USAGE: u8 = 64;

/// Batches are decoded on the I/O threads and freed on the state task's, half a second later:
/// glibc's malloc spent a third of the collector's CPU on those cross-thread frees (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// vigie collector: one verdict per cluster from every agent's view.
#[derive(Debug, Parser)]
#[command(name = "vigie-collector", version = vigie_collector::VERSION)]
struct Cli {
    /// Configuration file (TOML); `VIGIE_COLLECTOR__SECTION__KEY` variables override it.
    #[arg(long, short)]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vigie_proto::tls::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cfg = match config::load(&cli.config, std::env::vars().collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigie-collector: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if cli.check_config {
        println!(
            "configuration OK: gRPC {}, HTTP {}",
            cfg.grpc_listen, cfg.http_listen
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigie-collector: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let grpc = match tokio::net::TcpListener::bind(cfg.grpc_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "vigie-collector: cannot bind grpc_listen {}: {e}",
                    cfg.grpc_listen
                );
                return ExitCode::FAILURE;
            }
        };
        let http = match tokio::net::TcpListener::bind(cfg.http_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "vigie-collector: cannot bind http_listen {}: {e}",
                    cfg.http_listen
                );
                return ExitCode::FAILURE;
            }
        };
        match server::run(cfg, grpc, http, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "Collector failed");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop the collector with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("Shutting down");
}
