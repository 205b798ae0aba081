//! An invite link opened from outside: who invites, through which server and certificate,
//! and [Use this server and call] or [Cancel]. Taking it writes the server (and pins the
//! certificate) through the settings' save path and calls once registered there.

use egui::RichText;

use super::i18n::t;
use super::state::{Action, InviteOffer};
use super::widgets::{Fill, big_button, warning_banner};
use super::{PinholeApp, View, words};
use crate::invite::{self, Invite};
use crate::settings;

impl PinholeApp {
    /// Shows `invite` for the user to take or leave (replacing one shown before). What this
    /// profile already trusts for its server is read now, so that a link pinning another
    /// certificate is said loudly.
    pub fn open_invite(&mut self, invite: Invite) {
        let current = self.saved.as_ref().unwrap_or(&self.form);
        let current_server = current.server.trim().to_owned();
        let same_server = current
            .server_addrs()
            .unwrap_or_default()
            .contains(&invite.server);
        let pinned = same_server
            .then(|| current.pinned_fingerprint().ok().flatten())
            .flatten();
        let trusted = pinned.or_else(|| {
            invite::known_fingerprint(&self.path, &invite.server)
                .ok()
                .flatten()
        });
        tracing::info!(name = invite.name, server = %invite.server, "invite link opened");
        self.state.invite_opened(InviteOffer {
            invite,
            current_server,
            trusted,
        });
    }

    pub(super) fn invite_ui(&mut self, ui: &mut egui::Ui) {
        let Some(offer) = self.state.invite.clone() else {
            return;
        };
        let invite = &offer.invite;
        let server = invite.server.to_string();
        ui.add_space(16.0);
        ui.vertical_centered(|ui| {
            ui.weak(t("invite-link"));
            ui.heading(RichText::new(words::invite_heading(&invite.name)).size(24.0));
            ui.label(words::invite_question(&invite.name));
        });
        ui.add_space(12.0);
        egui::Frame::group(ui.style())
            .inner_margin(12.0)
            .corner_radius(6.0)
            .show(ui, |ui| {
                ui.set_width(ui.available_width());
                egui::Grid::new("invite")
                    .num_columns(2)
                    .spacing([12.0, 10.0])
                    .show(ui, |ui| {
                        ui.strong(t("invite-server"));
                        ui.vertical(|ui| {
                            ui.label(RichText::new(&server).monospace().size(14.0));
                            ui.weak(words::invite_server_note(&offer));
                        });
                        ui.end_row();
                        ui.strong(t("invite-certificate"));
                        ui.vertical(|ui| {
                            ui.set_max_width(ui.available_width());
                            match &invite.fingerprint {
                                Some(fp) => {
                                    let text = RichText::new(fp.to_string()).monospace();
                                    ui.add(egui::Label::new(text).wrap());
                                    ui.weak(words::invite_fingerprint_pins());
                                }
                                None => {
                                    ui.add(egui::Label::new(words::invite_no_fingerprint()).wrap());
                                }
                            }
                        });
                        ui.end_row();
                    });
            });
        if offer.certificate_differs()
            && let (Some(trusted), Some(link)) = (offer.trusted, invite.fingerprint)
        {
            ui.add_space(8.0);
            let (trusted, link) = (trusted.to_string(), link.to_string());
            warning_banner(ui, &words::invite_certificate_differs(&server), |ui| {
                for (what, fingerprint) in words::invite_fingerprints(&trusted, &link) {
                    ui.label(RichText::new(what).small());
                    let fingerprint = RichText::new(fingerprint).monospace().small();
                    ui.add(egui::Label::new(fingerprint).wrap());
                }
            });
        }
        ui.add_space(16.0);
        let mut action = None;
        ui.horizontal(|ui| {
            if big_button(ui, words::use_invite(), Fill::Good, egui::vec2(0.0, 36.0)).clicked() {
                action = Some(Action::UseInvite);
            }
            if ui
                .add(egui::Button::new(t("cancel")).min_size(egui::vec2(0.0, 36.0)))
                .clicked()
            {
                action = Some(Action::DismissInvite);
            }
        });
        if super::keys::pressed(ui, super::keys::CANCEL) {
            action = Some(Action::DismissInvite);
        }
        if let Some(action) = action {
            self.act(action);
        }
    }

    /// Takes the invite's server into the settings (through the same save as the settings
    /// view: checked, written atomically, the engine restarted when they changed) and puts its
    /// name in the call field; the call goes out once registered there. On first run the setup
    /// form takes the server instead: the user still has to say who they are.
    pub(super) fn use_invite(&mut self, invite: &Invite) {
        self.call_field.clone_from(&invite.name);
        let Some(saved) = self.saved.clone() else {
            self.form = invite::apply(&self.form, invite);
            self.view = View::Setup;
            return;
        };
        let next = invite::apply(&saved, invite);
        if next != saved {
            self.form = next.clone();
            self.save();
            if self.saved.as_ref() != Some(&next) {
                let why = self.file_error.take().unwrap_or_default();
                self.reset_form();
                self.state.invite_failed(words::invite_not_used(&why));
                return;
            }
        }
        self.view = View::Main;
        self.reset_form();
        self.refresh_own_invite();
        let effects = self.state.invite_used(std::time::Instant::now());
        self.run(effects);
    }

    /// The user's own invite link, for the main view's copy button: from the settings and the
    /// known servers; with the built-in server open to the local network, its first address
    /// there and its certificate. Read again when the server or its certificate may have
    /// changed (start, save, registration, trusting a certificate).
    pub(super) fn refresh_own_invite(&mut self) {
        let Some(saved) = &self.saved else {
            self.own_invite = None;
            return;
        };
        self.own_invite = match (saved.server_addr(), &self.embedded, self.lan_addr) {
            (Ok(None), Some((true, server)), Some(addr)) => {
                let name = saved.name.trim();
                settings::validate_name(name).ok().map(|()| {
                    let at = settings::ServerAddr {
                        host: addr.ip().to_string(),
                        port: addr.port(),
                    };
                    Invite::new(name.to_owned(), at, Some(server.fingerprint()))
                })
            }
            _ => invite::own_invite(saved, &self.path, None).ok(),
        }
        .map(|i| i.to_string());
    }
}
