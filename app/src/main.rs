//! `pinhole`: the desktop softphone, and its headless subcommands over the same engine.

mod display;
mod gui;
mod nat_check;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pinhole: a softphone that calls straight through NAT.
///
/// With no subcommand, starts the desktop app.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the desktop app (the default).
    Gui,
    /// Check how this machine's NAT treats UDP, against a rendezvous or STUN server.
    NatCheck(nat_check::NatCheckArgs),
    /// Call a name, talk for --duration seconds, hang up (headless).
    Call(pinhole::headless::CallArgs),
    /// Register and answer incoming calls (headless).
    Answer(pinhole::headless::AnswerArgs),
    /// Accept a server's changed certificate (after "the certificate of ... changed").
    ///
    /// With FINGERPRINT (check it with the server's operator first), it is trusted for the
    /// server from now on; without, the remembered certificate is forgotten and the next
    /// connection trusts the one the server presents. A fingerprint pinned for that server in
    /// the settings follows.
    TrustServer(pinhole::headless::TrustServerArgs),
    /// Accept a contact's changed key (after "NAME's key changed since your last call").
    ///
    /// First compare the call's code (six digits, shown on both sides) with NAME, by voice or
    /// in person: only if it matches is the new key theirs. With KEY (printed in the warning),
    /// that key is trusted; without, the remembered key is forgotten and the next call with
    /// NAME remembers whatever key it brings.
    TrustContact(pinhole::headless::TrustContactArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command.unwrap_or(Command::Gui) {
        Command::Gui => run_gui(),
        Command::NatCheck(args) => nat_check::run(args),
        Command::Call(args) => pinhole::headless::call(args),
        Command::Answer(args) => pinhole::headless::answer(args),
        Command::TrustServer(args) => pinhole::headless::trust_server(args),
        Command::TrustContact(args) => pinhole::headless::trust_contact(args),
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,pinhole=info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn run_gui() -> ExitCode {
    if let Err(missing) = display::check() {
        eprintln!("{missing}");
        eprintln!("{}", display::HEADLESS_GUIDANCE);
        return ExitCode::from(2);
    }
    match gui::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pinhole: could not open the window: {err}");
            eprintln!("{}", display::HEADLESS_GUIDANCE);
            ExitCode::from(2)
        }
    }
}
