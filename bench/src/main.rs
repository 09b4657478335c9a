//! `vigie-bench`: the benchmarks of bench/README.md. Each subcommand prints its table and writes
//! it into its section of bench/README.md; the scripts in bench/ prepare what they need and call
//! them.

mod agent_cost;
mod child;
mod compare;
mod detection;
mod procfs;
mod report;
mod scale;
mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "vigie-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Cost of a supervision cycle: vigie-agent beside the Nagios plugins and check_patroni.
    AgentCost {
        #[arg(long, default_value = "target/release/vigie-agent")]
        agent: PathBuf,
        #[arg(long, default_value = "check_patroni")]
        check_patroni: PathBuf,
        /// Steady-state window of the agent at each interval, and of the idle baseline.
        #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
        window: Duration,
        /// Cycles of the plugin procedures and of the cold agent runs.
        #[arg(long, default_value_t = 60)]
        cycles: u32,
        #[arg(long, default_value = "127.0.0.1:9798")]
        sink: SocketAddr,
    },
    /// Detection times per scenario and interval, from the scenario suite's JSON lines.
    Detection {
        /// The JSON lines the runs appended (VIGIE_SCENARIO_TIMES).
        times: PathBuf,
        /// The command that produced them, for the doc.
        #[arg(long, default_value = "bench/detection.sh")]
        command: String,
    },
    /// Collector scale: N simulated agents over gRPC, verdict freshness and API latency.
    CollectorScale(scale::Options),
    /// Two collector-scale runs side by side (`bench/collector-scale.sh --baseline REV`).
    CollectorCompare {
        /// The earlier build's figures: its `--out` JSON, or the Markdown its driver printed.
        #[arg(long)]
        before: PathBuf,
        /// This build's figures, as `before`.
        #[arg(long)]
        after: PathBuf,
        /// The command that produced them, for the doc.
        #[arg(long, default_value = "bench/collector-scale.sh --baseline")]
        command: String,
    },
    /// Runs a command and prints the CPU (µs) and peak RSS (KiB) it and its children used.
    Rusage {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// The bare tonic ingest server (transport ceiling), until killed.
    Sink {
        #[arg(long, default_value = "127.0.0.1:9797")]
        listen: SocketAddr,
    },
}

fn main() {
    let cli = Cli::parse();
    vigie_proto::tls::install_crypto_provider();
    if let Cmd::Rusage { command } = &cli.command {
        let ran = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let u = procfs::children_usage();
        println!("{} {}", u.cpu.as_micros(), u.max_rss_kib);
        std::process::exit(if ran.is_ok() { 0 } else { 1 });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        match cli.command {
            Cmd::AgentCost {
                agent,
                check_patroni,
                window,
                cycles,
                sink,
            } => {
                agent_cost::run(agent_cost::Options {
                    agent_bin: agent,
                    check_patroni,
                    window,
                    cycles,
                    sink_addr: sink,
                })
                .await
            }
            Cmd::Detection { times, command } => detection::run(&times, &command),
            Cmd::CollectorScale(opts) => scale::run(opts).await,
            Cmd::CollectorCompare {
                before,
                after,
                command,
            } => {
                if let Err(e) = compare::run(&before, &after, &command) {
                    eprintln!("collector-compare: {e}");
                    std::process::exit(1);
                }
            }
            Cmd::Rusage { .. } => {}
            Cmd::Sink { listen } => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .unwrap_or_else(|e| panic!("bind {listen}: {e}"));
                if let Err(e) =
                    sink::serve(sink::Sink::default(), listener, std::future::pending()).await
                {
                    eprintln!("sink: {e}");
                }
            }
        }
    });
}
