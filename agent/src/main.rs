//! `vigie-agent` command line: parse flags, load and validate the configuration (exit 64 when
//! invalid, before anything runs), then run once or until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use vigie_agent::agent::Agent;
use vigie_agent::{config, output, result, run};

/// `EX_USAGE`: invalid configuration or arguments.
const EX_USAGE: u8 = 64;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// vigie sidecar agent: runs the supervision probes of this host's components.
#[derive(Debug, Parser)]
#[command(name = "vigie-agent", version = vigie_agent::VERSION)]
struct Cli {
    /// Configuration file (TOML); `VIGIE_AGENT__SECTION__KEY` variables override it.
    #[arg(long, short)]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Run every probe once, print the results and exit 0/1/2/3 (ok/warning/critical/unknown).
    #[arg(long)]
    once: bool,
    /// Output of --once.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vigie_proto::tls::install_crypto_provider();
    let default_level = if cli.once || cli.check_config {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();

    let cfg = match config::load(&cli.config, std::env::vars().collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigie-agent: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if cli.check_config {
        println!(
            "configuration OK: node {}, cluster {}, components: {}",
            cfg.node,
            cfg.cluster,
            config::components(&cfg).join(", ")
        );
        return ExitCode::SUCCESS;
    }
    // The blocking reads (/proc, statvfs) run on a few long-lived threads, not one new thread per
    // read: bounded, and four leave room for three reads hung on a dead mount while the others
    // still run.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigie-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let mut agent = match Agent::try_new(cfg) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("vigie-agent: {e}");
                return ExitCode::from(EX_USAGE);
            }
        };
        if cli.once {
            let results = agent.cycle().await;
            let text = match cli.format {
                Format::Table => output::table(agent.config(), &results),
                Format::Json => output::json(agent.config(), &results),
            };
            println!("{text}");
            let code = result::overall(&results).exit_code();
            return ExitCode::from(u8::try_from(code).unwrap_or(3));
        }
        let uplink = match agent.config().collector.is_some() {
            true => match vigie_agent::uplink::spawn(agent.config()) {
                Ok(u) => Some(u),
                Err(e) => {
                    eprintln!("vigie-agent: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            },
            false => None,
        };
        run::run(agent, uplink, shutdown_signal()).await;
        ExitCode::SUCCESS
    });
    // Dropping the runtime would wait for a probe's read still hung in the kernel (a dead NFS
    // mount) for ever.
    runtime.shutdown_background();
    code
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
