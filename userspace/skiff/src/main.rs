//! skiff: the command-line entry point (up, server, agent, token, datapath, lb, ct, version).
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod node;
mod output;
mod overlay;
mod routes;
mod sandbox;
mod server;
mod token;

use std::process::ExitCode;

use clap::Parser as _;

/// BSD sysexits EX_USAGE: the command line or configuration is wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    // A parent (`skiff up`) may have blocked these to wait for them; every skiff process must
    // see them to shut down cleanly, and the mask is inherited across exec.
    let mut stop = nix::sys::signal::SigSet::empty();
    stop.add(nix::sys::signal::Signal::SIGINT);
    stop.add(nix::sys::signal::Signal::SIGTERM);
    let _ = stop.thread_unblock();
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
