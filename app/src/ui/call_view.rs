//! A call we placed (reaching them, ringing, Cancel) and a call that is up (its encryption and
//! the code to compare, a loud warning when the peer's key changed, figures, meters, volume,
//! mute as the engine reports it, Hang up).

use std::time::{Duration, Instant};

use egui::RichText;

use super::i18n::{t, tr};
use super::state::{Action, Call, UpCall};
use super::widgets::{
    Fill, METER_REPAINT, big_button, error_line, good_text, icons, meter_bar, named,
    warning_banner, who, with_icon, working,
};
use super::{PinholeApp, keys, words};
use crate::engine::CallReport;

impl PinholeApp {
    pub(super) fn calling_ui(&mut self, ui: &mut egui::Ui) {
        let Call::Placing {
            peer,
            ringing,
            since,
        } = &self.state.call
        else {
            return;
        };
        let status = words::placing(ringing.then(|| since.elapsed()));
        let peer = peer.clone();
        ui.vertical_centered(|ui| {
            ui.add_space(24.0);
            who(ui, &t("calling"), &peer);
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                working(ui);
                ui.label(status);
            });
            ui.add_space(24.0);
        });
        ui.ctx().request_repaint_after(Duration::from_millis(500));
        let esc = keys::pressed(ui, keys::HANG_UP);
        let hint = keys::hint(ui, &t("stop-calling-hint"), keys::HANG_UP);
        let cancel = ui
            .vertical_centered(|ui| {
                big_button(ui, t("cancel"), Fill::Stop, egui::vec2(120.0, 36.0))
                    .on_hover_text(hint)
                    .clicked()
            })
            .inner;
        if cancel || esc {
            self.act(Action::HangUp);
        }
    }

    pub(super) fn in_call_ui(&mut self, ui: &mut egui::Ui) {
        let Call::Up(up) = &self.state.call else {
            return;
        };
        let peer = up.peer.clone();
        let elapsed = Instant::now().saturating_duration_since(up.since);
        let path = words::path(up.path, up.remote);
        let stats = up.stats.clone();
        let (input, output) = (up.input.clone(), up.output.clone());
        let moves = up.moves.clone();
        let mut actions = Vec::new();
        let mut verify = None;

        if up.key_warning() {
            warning_banner(ui, &words::key_changed(&peer), |ui| {
                ui.add_space(4.0);
                if ui.button(words::trust_new_key()).clicked() {
                    actions.push(Action::TrustKey);
                }
            });
        }
        ui.vertical_centered(|ui| {
            ui.add_space(8.0);
            who(ui, &t("in-a-call-with"), &peer);
            ui.label(RichText::new(words::clock(elapsed)).size(22.0).monospace());
            ui.add_space(4.0);
            let verified = self
                .book
                .is_verified(&up.peer, up.security.peer_key.as_deref());
            if security_ui(ui, up, verified)
                && let Some(key) = up.security.peer_key.clone()
            {
                verify = Some((up.peer.clone(), key));
            }
            if peer.eq_ignore_ascii_case("echo") {
                echo_latency_ui(ui, stats.as_ref());
            }
        });
        ui.add_space(8.0);
        egui::Grid::new("call-stats")
            .num_columns(2)
            .spacing([16.0, 4.0])
            .show(ui, |ui| {
                for (name, value) in figures(&path, stats.as_ref()) {
                    ui.label(name);
                    ui.label(value);
                    ui.end_row();
                }
                let label = ui.label(t("microphone"));
                meter_bar(ui, &input, label.id);
                ui.end_row();
                let label = ui.label(t("speaker"));
                meter_bar(ui, &output, label.id);
                ui.end_row();
                let label = ui.label(t("volume"));
                let mut volume = self.state.volume;
                ui.add(
                    egui::Slider::new(&mut volume, 0.0..=2.0)
                        .custom_formatter(|v, _| format!("{:.0} %", v * 100.0)),
                )
                .labelled_by(label.id);
                ui.end_row();
                if (volume - self.state.volume).abs() > f32::EPSILON {
                    actions.push(Action::Volume(volume));
                }
            });
        for moved in &moves {
            ui.label(RichText::new(moved).color(ui.visuals().warn_fg_color));
        }
        if let Some((side, detail)) = self.state.audio_problem() {
            error_line(ui, &words::audio_failed_in_call(side, detail));
        }
        if let Some(notice) = self.state.notice.as_ref().filter(|n| n.failure) {
            error_line(ui, &notice.text);
        }
        ui.add_space(8.0);
        // The button shows what the engine says (Event::Muted), and asks for the other state.
        let muted = self.state.muted;
        let mut hang_up = keys::pressed(ui, keys::HANG_UP);
        let push_to_talk = self.form.interface.push_to_talk;
        if push_to_talk {
            if let Some(mute) = self.talk_key_changed(ui) {
                actions.push(Action::Mute(mute));
            }
            ui.weak(words::push_to_talk_hint());
        } else if keys::pressed(ui, keys::MUTE) {
            actions.push(Action::Mute(!muted));
        }
        ui.horizontal(|ui| {
            let (text, what, icon) = if muted {
                (t("unmute"), t("unmute-hint"), icons::MUTED)
            } else {
                (t("mute"), t("mute-hint"), icons::MICROPHONE)
            };
            let hint = keys::hint(ui, &what, keys::MUTE);
            let button = egui::Button::new(with_icon(icon, &text))
                .selected(muted)
                .min_size(egui::vec2(140.0, 32.0));
            let button = named(ui.add(button), &text);
            let button = if push_to_talk {
                button
            } else {
                button.on_hover_text(hint)
            };
            if button.clicked() {
                actions.push(Action::Mute(!muted));
            }
            let hint = keys::hint(ui, &t("hang-up-hint"), keys::HANG_UP);
            let name = t("hang-up");
            let face = with_icon(icons::CALL, &name);
            hang_up |= named(
                big_button(ui, face, Fill::Stop, egui::vec2(120.0, 32.0)),
                &name,
            )
            .on_hover_text(hint)
            .clicked();
        });
        if hang_up {
            actions.push(Action::HangUp);
        }
        ui.ctx().request_repaint_after(METER_REPAINT);
        if let Some((peer, key)) = verify {
            self.verify(&peer, &key);
        }
        for action in actions {
            self.act(action);
        }
    }

    /// Push-to-talk: the microphone follows the talk key. The mute to ask for when the key went
    /// down or up, and on the call's first frame (muted unless the key is held).
    fn talk_key_changed(&mut self, ui: &egui::Ui) -> Option<bool> {
        let held = ui.input(|i| i.key_down(keys::TALK));
        // egui presses the focused button on Space: the talk key presses nothing.
        if ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, keys::TALK))
            && let Some(id) = ui.memory(|m| m.focused())
        {
            ui.memory_mut(|m| m.surrender_focus(id));
        }
        if self.talk_key == Some(held) {
            return None;
        }
        self.talk_key = Some(held);
        Some(!held)
    }
}

/// The call's encryption and the code both people compare, in large digits.
/// The echo test's figure: how long the voice took to come back, with its parts on hover.
fn echo_latency_ui(ui: &mut egui::Ui, stats: Option<&CallReport>) {
    ui.add_space(4.0);
    match stats.and_then(|s| s.echo_latency) {
        Some(latency) => {
            ui.label(RichText::new(words::voice_came_back(latency.mouth_to_ear_ms)).strong())
                .on_hover_text(words::echo_latency_parts(&latency));
        }
        None => {
            ui.weak(words::echo_measuring());
        }
    }
}

/// Whether the person pressed "The codes match".
fn security_ui(ui: &mut egui::Ui, up: &UpCall, verified: bool) -> bool {
    let security = &up.security;
    ui.label(RichText::new(words::encrypted(security.suite)).color(good_text(ui)));
    let mut verify = false;
    match &security.sas {
        Some(sas) => {
            ui.label(words::compare_with(&up.peer));
            ui.label(RichText::new(sas).size(40.0).monospace().strong());
            if verified {
                ui.label(RichText::new(words::verified(&up.peer)).color(good_text(ui)));
            } else if up.key_trusted {
                ui.label(words::key_trusted(&up.peer));
            } else if !up.key_warning() {
                ui.weak(words::compare_hint(&up.peer));
            }
            // A changed key is trusted first (the warning's button), then verified.
            if !verified && !up.key_warning() && security.peer_key.is_some() {
                verify = ui
                    .button(words::codes_match(&up.peer))
                    .on_hover_text(words::codes_match_hint())
                    .clicked();
            }
        }
        None => {
            ui.weak(words::no_code_for_echo());
        }
    }
    verify
}

/// The call's figures as (name, value) rows.
fn figures(path: &str, stats: Option<&CallReport>) -> [(String, String); 6] {
    let dash = || "–".to_owned();
    let quality = stats.map_or_else(|| t("measuring"), |s| words::quality(&s.quality));
    let rtt = stats
        .and_then(|s| s.rtt_ms)
        .map_or_else(|| t("measuring-lower"), |ms| format!("{ms:.0} ms"));
    let jitter = stats.map_or_else(dash, |s| format!("{:.1} ms", s.rtp.jitter_ms));
    let setup = stats
        .and_then(|s| s.setup_ms)
        .map_or_else(dash, |ms| format!("{ms} ms"));
    let loss = stats.map_or_else(dash, |s| {
        let expected = s.rtp.received + s.rtp.lost;
        let pct = if expected == 0 {
            0.0
        } else {
            100.0 * s.rtp.lost as f64 / expected as f64
        };
        tr(
            "loss-packets",
            &[
                ("pct", &format!("{pct:.1}")),
                ("lost", &s.rtp.lost),
                ("expected", &expected),
            ],
        )
    });
    [
        (t("stat-quality"), quality),
        (t("stat-path"), path.to_owned()),
        (t("stat-round-trip"), rtt),
        (t("stat-jitter"), jitter),
        (t("stat-first-audio"), setup),
        (t("stat-loss"), loss),
    ]
}
