//! `vigie`: the operator's CLI, a client of the collector's HTTP API.

use clap::Parser;

/// vigie command-line client.
#[derive(Debug, Parser)]
#[command(name = "vigie", version = vigie_collector::VERSION)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!("vigie {}: not implemented yet", vigie_collector::VERSION);
    std::process::exit(3);
}
