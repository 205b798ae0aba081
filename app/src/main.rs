//! `pinhole`: the desktop softphone, and its headless subcommands over the same engine.

mod display;
mod gui;
mod nat_check;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pinhole::invite::{self, Invite};
use pinhole::settings::{self, ServerAddr};

/// Pinhole: a softphone that calls straight through NAT.
///
/// With no subcommand, starts the desktop app; with an invite link, starts it on the link's
/// confirmation.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// An invite link, pinhole://call/NAME?server=HOST[:PORT]&fp=sha256:HEX: the app asks
    /// whether to take its server and call NAME (the desktop entry passes links this way).
    #[arg(value_name = "LINK")]
    link: Option<String>,
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
    ///
    /// PEER may be an invite link (pinhole://call/NAME?server=...&fp=...): NAME is called
    /// through the link's server, its certificate pinned to the link's fingerprint.
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
    /// Print your own invite link: whoever opens it in Pinhole calls you through your server.
    ///
    /// The link carries your name, your server and its certificate's fingerprint when it is
    /// known (pinned in the settings, or recorded on the first connection in
    /// known-servers.txt).
    Invite(InviteArgs),
}

/// `pinhole invite`'s flags.
#[derive(Debug, Args)]
struct InviteArgs {
    /// The server to put in the link, HOST[:PORT] (default: the settings file's).
    #[arg(long, value_name = "HOST[:PORT]")]
    server: Option<String>,
    /// The settings file (default: $PINHOLE_CONFIG, or settings.toml in the user's config
    /// directory); known-servers.txt is beside it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if let Some(link) = cli.link {
        return match parse_link(&link) {
            Ok(invite) => run_gui(Some(invite)),
            Err(code) => code,
        };
    }
    match cli.command.unwrap_or(Command::Gui) {
        Command::Gui => run_gui(None),
        Command::NatCheck(args) => nat_check::run(args),
        Command::Call(args) => match call_args(args) {
            Ok(args) => pinhole::headless::call(args),
            Err(code) => code,
        },
        Command::Invite(args) => print_invite(&args),
        Command::Answer(args) => pinhole::headless::answer(args),
        Command::TrustServer(args) => pinhole::headless::trust_server(args),
        Command::TrustContact(args) => pinhole::headless::trust_contact(args),
    }
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,pinhole=info"));
    // The `pulseaudio` crate ends a connection's reactor thread only by failing: every audio
    // device closed normally logs "ERROR ... Reactor error: Client disconnected". Real failures
    // reach Pinhole through cpal's error callback and its own device check, and are logged there.
    if let Ok(quiet) = "pulseaudio::client::reactor=off".parse() {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Says why `text` is not a usable invite link (status 2, as for other bad arguments).
fn bad_argument(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("pinhole: {message}");
    ExitCode::from(2)
}

/// An invite link from the command line; a text that is not one is named with the reason.
fn parse_link(text: &str) -> Result<Invite, ExitCode> {
    text.parse::<Invite>().map_err(|e| {
        if Invite::looks_like_link(text) || text.contains("://") {
            bad_argument(format!("{text}: {e}"))
        } else {
            bad_argument(format!(
                "{text:?} is neither a command nor an invite link (pinhole://call/NAME?server=...); \
                 see pinhole --help"
            ))
        }
    })
}

/// `pinhole call LINK`: the link's name, server and fingerprint in place of the flags (which
/// must then not name another server or fingerprint).
fn call_args(
    mut args: pinhole::headless::CallArgs,
) -> Result<pinhole::headless::CallArgs, ExitCode> {
    if !Invite::looks_like_link(&args.peer) {
        return Ok(args);
    }
    let invite = parse_link(&args.peer)?;
    if args.common.server.is_some() {
        return Err(bad_argument(format!(
            "the link names its server ({}): leave out --server",
            invite.server
        )));
    }
    if invite.fingerprint.is_some() && args.common.server_fingerprint.is_some() {
        return Err(bad_argument(
            "the link pins the server's certificate: leave out --server-fingerprint",
        ));
    }
    args.common.server = Some(invite.server_setting());
    if let Some(fp) = invite.fingerprint {
        args.common.server_fingerprint = Some(fp.to_string());
    }
    args.peer = invite.name;
    Ok(args)
}

/// `pinhole invite`: the user's own link on stdout.
fn print_invite(args: &InviteArgs) -> ExitCode {
    let path = match args.config.clone().map_or_else(settings::default_path, Ok) {
        Ok(path) => path,
        Err(e) => return bad_argument(e),
    };
    let stored = match settings::load(&path) {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            return bad_argument(format!(
                "no settings yet ({}): start the app once, or run pinhole call or answer with \
                 --user and --server",
                path.display()
            ));
        }
        Err(e) => return bad_argument(e),
    };
    let server = match args.server.as_deref().map(ServerAddr::parse).transpose() {
        Ok(server) => server,
        Err(e) => return bad_argument(format!("--server: {e}")),
    };
    match invite::own_invite(&stored, &path, server.as_ref()) {
        Ok(link) => {
            if link.fingerprint.is_none() {
                eprintln!(
                    "pinhole: no certificate fingerprint is known for {} yet (connect to it \
                     once, or pin it in the settings), so the link has none: whoever opens it \
                     trusts the certificate the server presents the first time",
                    link.server
                );
            }
            println!("{link}");
            ExitCode::SUCCESS
        }
        Err(e) => bad_argument(e),
    }
}

fn run_gui(invite: Option<Invite>) -> ExitCode {
    // One app per profile: a running one takes the link (or comes to the front), rather than
    // a second one registering the same name.
    let socket = settings::default_path()
        .ok()
        .map(|path| pinhole::ui::handoff::socket_path(&path));
    if let Some(socket) = &socket {
        match pinhole::ui::handoff::hand_over(socket, invite.as_ref()) {
            Ok(true) => {
                eprintln!(
                    "pinhole: the app is already running; {}",
                    if invite.is_some() {
                        "it shows the link"
                    } else {
                        "its window was raised"
                    }
                );
                return ExitCode::SUCCESS;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("the running app did not answer ({e}); starting another"),
        }
    }
    if let Err(missing) = display::check() {
        eprintln!("{missing}");
        eprintln!("{}", display::HEADLESS_GUIDANCE);
        return ExitCode::from(2);
    }
    match gui::run(invite, socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pinhole: could not open the window: {err}");
            eprintln!("{}", display::HEADLESS_GUIDANCE);
            ExitCode::from(2)
        }
    }
}
