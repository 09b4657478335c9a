//! `vigie-collector` command line.

use clap::Parser;

/// vigie collector.
#[derive(Debug, Parser)]
#[command(name = "vigie-collector", version = vigie_collector::VERSION)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "vigie-collector {}: not implemented yet",
        vigie_collector::VERSION
    );
    std::process::exit(3);
}
