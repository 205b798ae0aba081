//! The main view: who you are, the registration line (from the engine's
//! `Event::Registration` only), the network verdict, a field to call a name, the last call's
//! outcome, contacts and recent calls.

use std::time::{Duration, Instant};

use egui::RichText;

use super::driver::NatState;
use super::i18n::{self, t, tr};
use super::state::{Action, Failure, Link};
use super::widgets::{error_line, good_text, icons, named, warning_banner, with_icon, working};
use super::{PinholeApp, View, keys, words};
use crate::engine::StopReason;

impl PinholeApp {
    pub(super) fn main_ui(&mut self, ui: &mut egui::Ui) {
        let (name, mut server, lan) = self
            .saved
            .as_ref()
            .map(|s| {
                let lan = s.advanced.embedded_server_lan;
                (s.name.clone(), s.server.clone(), lan)
            })
            .unwrap_or_default();
        // Of a list of servers, the one registered with.
        if let Link::Registered { server: at, .. } = &self.state.link
            && !server.trim().is_empty()
        {
            server.clone_from(at);
        }
        ui.horizontal(|ui| {
            ui.heading(tr("you-are", &[("name", &name)]));
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let hint = keys::hint(ui, &t("settings-hint"), keys::SETTINGS);
                let name = t("settings");
                let face = with_icon(icons::SETTINGS, &name);
                let open = named(ui.button(face), &name).on_hover_text(hint).clicked();
                if open || keys::pressed(ui, keys::SETTINGS) {
                    self.reset_form();
                    self.test_sound_result = None;
                    self.view = View::Settings;
                }
            });
        });
        ui.label(words::server_line(&server, lan));
        if server.is_empty()
            && lan
            && let Some(hint) = &self.lan_hint
        {
            ui.label(words::lan_hint(hint));
        }
        self.own_invite_ui(ui);
        self.link_ui(ui);
        self.nat_ui(ui);
        ui.separator();

        self.call_field_ui(ui);
        if let Some(peer) = &self.state.pending_call {
            ui.horizontal(|ui| {
                working(ui);
                ui.label(words::call_when_connected(peer));
            });
        }
        if let Some(notice) = &self.state.notice {
            if notice.failure {
                ui.colored_label(ui.visuals().error_fg_color, &notice.text);
            } else {
                ui.label(&notice.text);
            }
        }
        if let Some(e) = &self.book_error {
            error_line(ui, e);
        }
        ui.separator();
        self.contacts_ui(ui);
    }

    /// "Copy invite link" and the link itself, when the settings make one (a server others
    /// can reach; the built-in one only when it is open to the local network).
    fn own_invite_ui(&mut self, ui: &mut egui::Ui) {
        let Some(link) = self.own_invite.clone() else {
            return;
        };
        ui.horizontal(|ui| {
            let name = words::copy_invite();
            if named(ui.button(with_icon(icons::COPY, &name)), &name)
                .on_hover_text(words::copy_invite_hint())
                .clicked()
            {
                ui.ctx().copy_text(link.clone());
                self.invite_copied = true;
            }
            if self.invite_copied {
                ui.label(RichText::new(words::invite_copied()).color(good_text(ui)));
            }
        });
        let text = RichText::new(link).monospace().weak();
        ui.add(egui::Label::new(text).wrap().selectable(true));
    }

    /// The registration line: what the engine last said, nothing else.
    fn link_ui(&mut self, ui: &mut egui::Ui) {
        let now = Instant::now();
        let mut action = None;
        match &self.state.link {
            Link::Off => {}
            Link::Connecting { server } => {
                ui.horizontal(|ui| {
                    working(ui);
                    ui.label(words::connecting(server));
                });
            }
            Link::Registered { server, .. } => {
                ui.label(RichText::new(words::online(server)).color(good_text(ui)));
            }
            Link::Offline {
                reason, retry_at, ..
            } => {
                error_line(
                    ui,
                    &words::offline(reason, retry_at.saturating_duration_since(now)),
                );
                ui.ctx().request_repaint_after(Duration::from_millis(500));
            }
            Link::Replaced { .. } => {
                error_line(ui, &words::replaced(&self.state.name));
                if ui.button(words::sign_in_again()).clicked() {
                    action = Some(Action::Reconnect);
                }
            }
            Link::Failed {
                server,
                failure:
                    Failure::Stopped(Some(StopReason::UntrustedServer {
                        pinned, presented, ..
                    })),
                ..
            } => {
                warning_banner(ui, &words::certificate_changed(server), |ui| {
                    for (what, fingerprint) in words::fingerprints(pinned, presented) {
                        ui.label(RichText::new(what).small());
                        let fingerprint = RichText::new(fingerprint).monospace().small();
                        ui.add(egui::Label::new(fingerprint).wrap());
                    }
                    ui.add_space(4.0);
                    ui.horizontal(|ui| {
                        if ui.button(words::trust_new_certificate()).clicked() {
                            action = Some(Action::TrustServer);
                        }
                        if ui.button(t("try-again-now")).clicked() {
                            action = Some(Action::TryAgainNow);
                        }
                    });
                });
            }
            Link::Failed {
                server,
                failure,
                retry_at,
            } => {
                error_line(ui, &words::failed(server, failure));
                ui.horizontal(|ui| {
                    if let Some(at) = retry_at {
                        ui.label(words::retry_in(at.saturating_duration_since(now)));
                    }
                    if ui.button(t("try-again-now")).clicked() {
                        action = Some(Action::TryAgainNow);
                    }
                });
            }
        }
        if let Some(action) = action {
            self.act(action);
        }
    }

    pub(super) fn nat_ui(&self, ui: &mut egui::Ui) {
        match &self.nat {
            NatState::Idle => {}
            NatState::Running(_) => {
                ui.horizontal(|ui| {
                    working(ui);
                    ui.label(t("checking-network"));
                });
            }
            NatState::Done(Ok(report)) => {
                let [ok, rest @ ..] = words::nat_found(report);
                ui.label(RichText::new(ok).color(good_text(ui)));
                for line in rest {
                    ui.label(line);
                }
            }
            NatState::Done(Err(e)) => error_line(ui, &words::nat_failed(e)),
        }
        // Not asked for (switched off, or a server on this machine or network): nothing to say.
        if let Some(status) = &self.state.port_mapping
            && *status != traversal::portmap::Status::Off
        {
            ui.label(words::port_mapping(status));
        }
    }

    fn call_field_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label(t("name-to-call"));
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.call_field)
                        .hint_text(t("name-to-call-hint"))
                        .desired_width((ui.available_width() - buttons_room(ui)).max(120.0)),
                )
                .labelled_by(label.id);
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            // Typing a name works at once: the field takes the keyboard when nothing has it.
            if !enter && ui.memory(|m| m.focused().is_none()) {
                field.request_focus();
            }
            let peer = self.call_field.trim().to_owned();
            let ready = !peer.is_empty();
            let hint = keys::hint(ui, &t("call-hint"), keys::CALL);
            let name = t("call");
            let button = egui::Button::new(with_icon(icons::CALL, &name));
            let clicked = named(ui.add_enabled(ready, button), &name)
                .on_hover_text(hint)
                .clicked();
            if (enter || clicked) && ready {
                self.act(Action::Call(peer.clone()));
            }
            if ui
                .add_enabled(ready, egui::Button::new(t("add-contact")))
                .clicked()
            {
                self.book.add_contact(&peer);
                self.save_book();
            }
        });
    }

    fn contacts_ui(&mut self, ui: &mut egui::Ui) {
        let mut call = None;
        let mut remove = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.strong(t("contacts"));
            if self.book.contacts.is_empty() {
                ui.weak(t("no-contacts"));
            }
            for name in &self.book.contacts {
                ui.horizontal(|ui| {
                    if ui.button(tr("call-name", &[("name", name)])).clicked() {
                        call = Some(name.clone());
                    }
                    if self.is_verified(name) {
                        ui.label(RichText::new(words::verified_mark()).color(good_text(ui)))
                            .on_hover_text(words::verified(name));
                    }
                    if ui
                        .small_button(t("remove"))
                        .on_hover_text(t("remove-hint"))
                        .clicked()
                    {
                        remove = Some(name.clone());
                    }
                });
            }
            ui.add_space(8.0);
            ui.strong(t("recent-calls"));
            if self.book.recent.is_empty() {
                ui.weak(t("no-calls"));
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            for (i, r) in self.book.recent.iter().enumerate() {
                ui.push_id(i, |ui| {
                    ui.horizontal(|ui| {
                        if ui
                            .add(egui::Button::new(&r.name).frame(false))
                            .on_hover_text(tr("call-name", &[("name", &r.name)]))
                            .clicked()
                        {
                            call = Some(r.name.clone());
                        }
                        let way = t(if r.outgoing {
                            "way-outgoing"
                        } else {
                            "way-incoming"
                        });
                        let ago = words::ago(now.saturating_sub(r.when));
                        let outcome = words::outcome_shown(&r.outcome);
                        let line = format!("{way} · {outcome} · {ago}");
                        // A missed call stands out: it may want calling back (click the name).
                        if !r.outgoing && r.outcome == words::OUTCOME_MISSED {
                            ui.label(RichText::new(line).color(ui.visuals().warn_fg_color));
                        } else {
                            ui.weak(line);
                        }
                    });
                });
            }
        });
        if let Some(name) = remove {
            self.book.remove_contact(&name);
            self.save_book();
        }
        if let Some(name) = call {
            self.call_field.clone_from(&name);
            self.act(Action::Call(name));
        }
    }
}

/// The room the call field leaves for Call and Add contact: 190 points for the English words,
/// more where the app's language has longer ones.
fn buttons_room(ui: &egui::Ui) -> f32 {
    let width = |text: String| {
        egui::WidgetText::from(text)
            .into_galley(
                ui,
                Some(egui::TextWrapMode::Extend),
                f32::INFINITY,
                egui::TextStyle::Button,
            )
            .size()
            .x
    };
    let words = |language| {
        width(i18n::tr_in(language, "call", &[])) + width(i18n::tr_in(language, "add-contact", &[]))
    };
    let longer = words(i18n::language()) - words(i18n::Language::English);
    190.0 + longer.max(0.0)
}
