//! `vigie-agent` command line.

use clap::Parser;

/// vigie sidecar agent.
#[derive(Debug, Parser)]
#[command(name = "vigie-agent", version = vigie_agent::VERSION)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "vigie-agent {}: probes are not implemented yet",
        vigie_agent::VERSION
    );
    std::process::exit(3);
}
