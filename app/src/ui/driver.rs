//! The app's side of the engine: it starts one from the saved settings when none runs (again
//! at the retry time after a failure), feeds its events to `AppState::apply` a bounded batch
//! per frame, and carries out the [`Effect`]s. Also the NAT check, started when registration
//! brings no verdict or from Settings.

use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use media::audio::{SinkSpec, SourceSpec};

use super::net::{self, NatReport};
use super::state::{Effect, Failure};
use super::widgets::server_message;
use super::{PinholeApp, View, words};
use crate::contacts::Contacts;
use crate::engine::{Command, EngineConfig, MediaConfig};
use crate::settings::{self, ServerAddr, Settings};
use traversal::tls::{ClientTrust, Fingerprint};

/// Time allowed for the NAT check.
const NAT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Events taken in per frame at most: a flood of events never stalls drawing.
const EVENTS_PER_FRAME: usize = 64;

/// The NAT check's state.
#[derive(Debug)]
pub(super) enum NatState {
    Idle,
    Running(mpsc::Receiver<Result<NatReport, String>>),
    Done(Result<NatReport, String>),
}

impl PinholeApp {
    /// Starts the engine when there are settings and none runs (again after a failure, once
    /// the retry time has come).
    pub(super) fn ensure_engine(&mut self, now: Instant) {
        if self.engine.is_some() || self.view == View::Setup || !self.state.engine_due(now) {
            return;
        }
        let Some(mut saved) = self.saved.clone() else {
            return;
        };
        let (server, trust) = match self.server_target(&saved) {
            Ok(target) => target,
            Err(failure) => {
                self.state.engine_failed(saved.server.clone(), failure, now);
                return;
            }
        };
        let key = match saved.ensure_key() {
            Ok((key, created)) => {
                if created {
                    if let Err(e) = settings::save(&self.path, &saved) {
                        self.file_error = Some(words::key_not_saved(&e));
                    }
                    self.saved = Some(saved.clone());
                }
                key
            }
            Err(e) => {
                let failure = Failure::Settings(format!("your settings hold a bad key: {e}"));
                self.state.engine_failed(server, failure, now);
                return;
            }
        };
        let name = saved.name.trim().to_owned();
        let mut config = EngineConfig::new(server.clone(), name.clone(), key);
        config.input = self.input_spec.clone().unwrap_or(SourceSpec::Device {
            name: saved.input_device.clone(),
        });
        config.output = self.output_spec.clone().unwrap_or(SinkSpec::Device {
            name: saved.output_device.clone(),
        });
        // The settings' processing is for a microphone; a tone or file given for a test is
        // sent as it is.
        let processing = if matches!(config.input, SourceSpec::Device { .. }) {
            saved.audio.processing()
        } else {
            media::processing::ProcessingConfig::off()
        };
        config.media = MediaConfig {
            frame_ms: saved.advanced.frame_ms,
            bitrate_bps: saved.advanced.bitrate_bps,
            processing,
            ..MediaConfig::default()
        };
        config.udp_port = saved.advanced.udp_port;
        config.port_mapping = saved.advanced.port_mapping;
        config.keepalive = saved
            .advanced
            .keepalive_s
            .map(|s| Duration::from_secs(u64::from(s)));
        config.notify = self.wake.clone();
        config.trust = trust.clone();
        config.contacts = Some(settings::contacts_path(&self.path));
        self.trust = trust;
        match (self.start_engine)(config) {
            Ok(engine) => {
                self.engine = Some(engine);
                self.state.engine_started(server, name);
            }
            Err(why) => self.state.engine_failed(server, Failure::Start(why), now),
        }
    }

    /// The server to use for `saved` and how to trust its certificate: the configured one (or
    /// the configured list, comma-separated, for the engine to go round), or the embedded
    /// server (started here when needed), pinned.
    fn server_target(&mut self, saved: &Settings) -> Result<(String, ClientTrust), Failure> {
        match saved.server_addrs() {
            Ok(addrs) if !addrs.is_empty() => {
                self.embedded = None;
                let trust = saved
                    .client_trust(&self.path)
                    .map_err(|e| Failure::Settings(e.to_string()))?;
                Ok((settings::format_server_list(&addrs), trust))
            }
            Ok(_) => {
                let lan = saved.advanced.embedded_server_lan;
                if self.embedded.as_ref().is_some_and(|(l, _)| *l != lan) {
                    self.embedded = None;
                }
                if self.embedded.is_none() {
                    let dir = settings::beside(&self.path, settings::EMBEDDED_SERVER_DIR);
                    let server = net::start_embedded(lan, &dir).map_err(|e| {
                        Failure::Start(format!("the built-in server could not start: {e}"))
                    })?;
                    tracing::info!(addr = %server.local_addr(), "built-in server listening");
                    // Where other machines find it (asked once: it reads the interfaces).
                    let port = server.local_addr().port();
                    let found: Vec<SocketAddr> = net::lan_addresses()
                        .iter()
                        .map(|ip| SocketAddr::new(*ip, port))
                        .collect();
                    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
                    self.lan_hint = (lan && !shown.is_empty()).then(|| shown.join(" or "));
                    self.lan_addr = found.first().copied().filter(|_| lan);
                    self.embedded = Some((lan, server));
                    self.refresh_own_invite();
                }
                self.embedded
                    .as_ref()
                    .map(|(_, s)| (net::embedded_target(s).to_string(), net::embedded_trust(s)))
                    .ok_or_else(|| Failure::Start("the built-in server is not running".into()))
            }
            Err(e) => Err(Failure::Settings(server_message(&e))),
        }
    }

    /// The server "Test connection" checks: the form's, or the built-in one. Unlike
    /// [`Self::server_target`] it never stops or moves the running built-in server (the form is
    /// not saved yet).
    pub(super) fn test_target(&mut self, form: &Settings) -> Result<(String, ClientTrust), String> {
        match form.server_addr() {
            Ok(Some(addr)) => {
                let trust = form.client_trust(&self.path).map_err(|e| e.to_string())?;
                Ok((addr.to_string(), trust))
            }
            Ok(None) => match &self.embedded {
                Some((_, server)) => Ok((
                    net::embedded_target(server).to_string(),
                    net::embedded_trust(server),
                )),
                None => self.server_target(form).map_err(|failure| match failure {
                    Failure::Start(why) | Failure::Settings(why) => why,
                    Failure::Stopped(_) => "the built-in server is not running".into(),
                }),
            },
            Err(e) => Err(server_message(&e)),
        }
    }

    /// Stops the engine without waiting for it (its goodbye to the server runs on a thread).
    pub(super) fn stop_engine(&mut self) {
        if let Some(engine) = self.engine.take() {
            let _ = std::thread::Builder::new()
                .name("pinhole-engine-stop".into())
                .spawn(move || drop(engine));
        }
        self.state.engine_off();
        self.nat = NatState::Idle;
        self.nat_server = None;
    }

    pub(super) fn poll_engine(&mut self) {
        for _ in 0..EVENTS_PER_FRAME {
            let Some(event) = self.engine.as_ref().and_then(|e| e.try_event()) else {
                break;
            };
            let effects = self.state.apply(event, Instant::now());
            self.run(effects);
        }
    }

    /// Carries out what the state asks for.
    pub(super) fn run(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(command) => self.send(command),
                Effect::Record {
                    peer,
                    outgoing,
                    outcome,
                } => self.record(&peer, outgoing, outcome),
                Effect::Registered {
                    server,
                    mapped,
                    verdict: Some(verdict),
                } => {
                    // The first connection may just have recorded the certificate.
                    self.refresh_own_invite();
                    self.nat = NatState::Done(Ok(NatReport {
                        verdict: verdict.as_str().to_owned(),
                        mapped,
                        elapsed: Duration::ZERO,
                    }));
                    self.nat_server = Some(server);
                }
                Effect::Registered {
                    server,
                    verdict: None,
                    ..
                } => {
                    self.refresh_own_invite();
                    if self.nat_server.as_deref() != Some(server.as_str()) {
                        self.start_nat_check(server, self.trust.clone());
                    }
                }
                Effect::Missed { peer } => self.notify_missed(&peer),
                Effect::EngineStopped => self.engine = None,
                Effect::TrustKey { peer, key } => self.trust_key(&peer, &key),
                Effect::TrustServer { server, presented } => self.trust_server(&server, &presented),
                Effect::UseInvite(invite) => self.use_invite(&invite),
            }
        }
    }

    /// Remembers `key` as `peer`'s (the running engine reads the file at its next check).
    fn trust_key(&mut self, peer: &str, key: &str) {
        let path = settings::contacts_path(&self.path);
        let result = Contacts::open(path)
            .map_err(|e| e.to_string())
            .and_then(|mut book| book.trust(peer, key).map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                self.state.key_trusted(peer);
                self.refresh_verified();
            }
            Err(e) => self.state.app_failed(words::key_not_trusted(peer, &e)),
        }
    }

    /// Trusts the certificate `presented` for `server` (the engine starts again right after).
    fn trust_server(&mut self, server: &str, presented: &str) {
        let parsed = ServerAddr::parse(server).map_err(|e| e.to_string());
        let fingerprint = presented.parse::<Fingerprint>().map_err(|e| e.to_string());
        let result = parsed.and_then(|server| {
            let fingerprint = fingerprint?;
            settings::trust_server(&self.path, &server, Some(fingerprint))
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(done) => {
                for line in &done.lines {
                    tracing::info!("{line}");
                }
                self.refresh_own_invite();
                if done.settings_changed
                    && let Ok(Some(saved)) = settings::load(&self.path)
                {
                    self.saved = Some(saved);
                    self.reset_form();
                }
            }
            Err(e) => self.state.app_failed(words::certificate_not_trusted(&e)),
        }
    }

    fn send(&mut self, command: Command) {
        if !self.engine.as_ref().is_some_and(|e| e.send(command)) {
            self.state.engine_missing();
        }
    }

    pub(super) fn start_nat_check(&mut self, server: String, trust: ClientTrust) {
        let wake = self.wake.clone().unwrap_or_else(|| Arc::new(|| {}));
        let check = net::nat_check(server.clone(), trust, NAT_CHECK_TIMEOUT, wake);
        self.nat = NatState::Running(check);
        self.nat_server = Some(server);
    }

    pub(super) fn poll_nat(&mut self) {
        if let NatState::Running(rx) = &self.nat {
            match rx.try_recv() {
                Ok(result) => self.nat = NatState::Done(result),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.nat = NatState::Done(Err("the check stopped".into()));
                }
            }
        }
    }
}
