//! Settings: the basic fields (server, name, devices) shared with setup, the device and
//! connection tests, and the advanced fields. Nothing is applied until Save.

use std::sync::Arc;

use super::driver::NatState;
use super::i18n::{t, tr};
use super::sound::{self, InputMonitor, MonitorState};
use super::widgets::{
    METER_REPAINT, error_line, icons, meter_bar, named, server_message, with_icon, working,
};
use super::{DeviceChoice, PinholeApp, View, keys, words};
use crate::settings::{self, Theme};

impl PinholeApp {
    pub(super) fn settings_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading(t("settings"));
        // The fields scroll; Save and Cancel stay at the bottom of the window.
        let (basic_ok, advanced_ok) = scrolled_above_buttons(ui, |ui| {
            self.file_error_ui(ui);
            let basic_ok = self.basic_fields_ui(ui);
            ui.add_space(6.0);
            self.device_tests_ui(ui);
            ui.add_space(6.0);
            self.processing_fields_ui(ui);
            ui.add_space(6.0);
            self.connection_test_ui(ui, basic_ok);
            ui.add_space(6.0);
            self.interface_fields_ui(ui);
            (basic_ok, self.advanced_fields_ui(ui))
        });
        let valid = basic_ok && advanced_ok;
        let (mut save, mut cancel) = (
            valid && keys::pressed(ui, keys::SAVE),
            keys::pressed(ui, keys::CANCEL),
        );
        ui.horizontal(|ui| {
            let hint = keys::hint(ui, &t("save-hint"), keys::SAVE);
            save |= ui
                .add_enabled(valid, egui::Button::new(t("save")))
                .on_hover_text(hint)
                .clicked();
            let hint = keys::hint(ui, &t("cancel-hint"), keys::CANCEL);
            cancel |= ui.button(t("cancel")).on_hover_text(hint).clicked();
        });
        if save {
            self.save();
        } else if cancel {
            self.reset_form();
            self.view = View::Main;
        }
    }

    /// The look and the keys (`[interface]`): the theme shows at once, and goes back on Cancel.
    fn interface_fields_ui(&mut self, ui: &mut egui::Ui) {
        let interface = &mut self.form.interface;
        egui::Grid::new("interface")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let label = ui.label(t("theme"));
                ui.horizontal(|ui| {
                    for (theme, text) in [
                        (Theme::System, t("theme-system")),
                        (Theme::Light, t("theme-light")),
                        (Theme::Dark, t("theme-dark")),
                    ] {
                        ui.radio_value(&mut interface.theme, theme, text);
                    }
                })
                .response
                .labelled_by(label.id);
                ui.end_row();
                ui.label(t("push-to-talk"));
                ui.checkbox(&mut interface.push_to_talk, t("push-to-talk-what"))
                    .on_hover_text(words::push_to_talk_hint());
                ui.end_row();
            });
    }

    pub(super) fn file_error_ui(&self, ui: &mut egui::Ui) {
        if let Some(err) = &self.file_error {
            ui.colored_label(ui.visuals().error_fg_color, err);
        }
    }

    /// The chosen input's live level, and a test sound on the chosen output.
    pub(super) fn device_tests_ui(&mut self, ui: &mut egui::Ui) {
        if self.sounds {
            let wanted = self.form.input_device.clone();
            if self.monitor.as_ref().is_none_or(|m| m.device != wanted) {
                let wake = self.wake.clone().unwrap_or_else(|| Arc::new(|| {}));
                self.monitor = Some(InputMonitor::start(wanted, wake));
            }
        }
        ui.horizontal(|ui| {
            let label = ui.label(t("microphone-level"));
            match self.monitor.as_mut().map(|m| m.state().clone()) {
                Some(MonitorState::Running(meter)) => {
                    meter_bar(ui, &meter, label.id);
                    ui.ctx().request_repaint_after(METER_REPAINT);
                }
                Some(MonitorState::Opening) => working(ui),
                Some(MonitorState::Failed(e)) => error_line(ui, &words::no_microphone(&e)),
                None => {
                    ui.label(t("level-off")).labelled_by(label.id);
                }
            }
        });
        ui.horizontal(|ui| {
            let playing = self.test_sound.is_some();
            let name = t("play-test-sound");
            let button = egui::Button::new(with_icon(icons::SOUND, &name));
            if named(ui.add_enabled(!playing, button), &name).clicked() {
                let wake = self.wake.clone().unwrap_or_else(|| Arc::new(|| {}));
                self.test_sound_result = None;
                self.test_sound = Some(sound::play_test_sound(
                    self.form.output_device.clone(),
                    wake,
                ));
            }
            if let Some(rx) = &self.test_sound
                && let Ok(result) = rx.try_recv()
            {
                self.test_sound_result = Some(result);
                self.test_sound = None;
            }
            if self.test_sound.is_some() {
                working(ui);
                ui.label(t("playing-tone"));
            } else {
                match &self.test_sound_result {
                    Some(result @ Ok(())) => {
                        ui.label(words::test_sound(result));
                    }
                    Some(result @ Err(_)) => error_line(ui, &words::test_sound(result)),
                    None => {}
                }
            }
        });
    }

    pub(super) fn connection_test_ui(&mut self, ui: &mut egui::Ui, valid: bool) {
        ui.horizontal(|ui| {
            let running = matches!(self.nat, NatState::Running(_));
            let name = t("test-connection");
            let button = egui::Button::new(with_icon(icons::NETWORK, &name));
            if named(ui.add_enabled(valid && !running, button), &name).clicked() {
                let form = self.form.clone();
                match self.test_target(&form) {
                    Ok((server, trust)) => self.start_nat_check(server, trust),
                    Err(e) => self.nat = NatState::Done(Err(e)),
                }
            }
        });
        self.nat_ui(ui);
    }

    /// Server, name and devices. Returns whether they are valid; each problem is shown under
    /// its field as the user types.
    pub(super) fn basic_fields_ui(&mut self, ui: &mut egui::Ui) -> bool {
        let mut valid = true;
        egui::Grid::new("basic")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let label = ui.label(t("server"));
                ui.add(
                    egui::TextEdit::singleline(&mut self.form.server)
                        .hint_text(t("server-empty"))
                        .desired_width(220.0),
                )
                .labelled_by(label.id)
                .on_hover_text(t("server-hint"));
                ui.end_row();
                let server = self
                    .form
                    .server_addr()
                    .map(|_| ())
                    .map_err(|e| server_message(&e));
                valid &= problem_row(ui, server);

                let label = ui.label(t("server-certificate"));
                ui.add(
                    egui::TextEdit::singleline(&mut self.form.server_fingerprint)
                        .hint_text(t("server-certificate-empty"))
                        .desired_width(220.0),
                )
                .labelled_by(label.id)
                .on_hover_text(words::fingerprint_hint());
                ui.end_row();
                let fingerprint = self
                    .form
                    .pinned_fingerprint()
                    .map(|_| ())
                    .map_err(|e| words::sentence(&e.to_string()));
                valid &= problem_row(ui, fingerprint);

                let label = ui.label(t("your-name"));
                let field = ui
                    .add(
                        egui::TextEdit::singleline(&mut self.form.name)
                            .hint_text(t("your-name-hint"))
                            .desired_width(220.0),
                    )
                    .labelled_by(label.id);
                self.name_edited |= field.changed();
                ui.end_row();
                let name =
                    settings::check_name(&self.form.name).map_err(|e| words::name_problem(&e));
                // Nothing typed yet: Save waits for a name, without an error on arrival.
                if self.name_edited || !self.form.name.is_empty() {
                    valid &= problem_row(ui, name);
                } else {
                    valid &= name.is_ok();
                }

                let label = ui.label(t("microphone"));
                let inputs = &self.devices.inputs;
                device_picker(ui, label.id, &mut self.form.input_device, inputs);
                ui.end_row();
                let label = ui.label(t("speaker"));
                let outputs = &self.devices.outputs;
                device_picker(ui, label.id, &mut self.form.output_device, outputs);
                ui.end_row();
            });
        valid
    }

    /// What is done to the microphone's sound (`[audio]`); from the next call.
    fn processing_fields_ui(&mut self, ui: &mut egui::Ui) {
        let audio = &mut self.form.audio;
        ui.label(words::processing_heading());
        ui.indent("processing", |ui| {
            ui.checkbox(&mut audio.echo_cancellation, words::echo_cancellation())
                .on_hover_text(words::echo_cancellation_hint());
            ui.checkbox(&mut audio.noise_suppression, words::noise_suppression())
                .on_hover_text(words::noise_suppression_hint());
            ui.checkbox(&mut audio.gain_control, words::gain_control())
                .on_hover_text(words::gain_control_hint());
        });
    }

    fn advanced_fields_ui(&mut self, ui: &mut egui::Ui) -> bool {
        let mut valid = true;
        egui::CollapsingHeader::new(t("advanced")).show(ui, |ui| {
            egui::Grid::new("advanced")
                .num_columns(2)
                .spacing([12.0, 6.0])
                .show(ui, |ui| {
                    ui.label(t("frame-length"));
                    ui.horizontal(|ui| {
                        for ms in settings::FRAME_MS_CHOICES {
                            let frame = &mut self.form.advanced.frame_ms;
                            ui.radio_value(frame, ms, format!("{ms} ms"));
                        }
                    });
                    ui.end_row();

                    text_row(ui, &t("bitrate"), &mut self.bitrate_text, "");
                    let bitrate = parse_bitrate(&self.bitrate_text);
                    if let Ok(bps) = bitrate {
                        self.form.advanced.bitrate_bps = bps;
                    }
                    valid &= problem_row(ui, bitrate.map(|_| ()));

                    let keepalive_text = &mut self.keepalive_text;
                    text_row(ui, &t("keepalive"), keepalive_text, &t("keepalive-empty"));
                    let keepalive = parse_keepalive(&self.keepalive_text);
                    if let Ok(k) = keepalive {
                        self.form.advanced.keepalive_s = k;
                    }
                    valid &= problem_row(ui, keepalive.map(|_| ()));

                    text_row(
                        ui,
                        &t("udp-port"),
                        &mut self.udp_port_text,
                        &t("udp-port-empty"),
                    );
                    let port = parse_udp_port(&self.udp_port_text);
                    if let Ok(p) = port {
                        self.form.advanced.udp_port = p;
                    }
                    valid &= problem_row(ui, port.map(|_| ()));

                    ui.label(t("port-mapping"));
                    ui.checkbox(&mut self.form.advanced.port_mapping, t("port-mapping-what"));
                    ui.end_row();

                    ui.label(t("builtin-server"));
                    ui.checkbox(
                        &mut self.form.advanced.embedded_server_lan,
                        t("builtin-server-what"),
                    );
                    ui.end_row();
                });
        });
        valid
    }
}

/// Room kept under a scrolled form for its row of buttons.
const BUTTON_ROW: f32 = 44.0;

/// `form` in a vertical scroll area that leaves room for one row of buttons below it.
pub(super) fn scrolled_above_buttons<R>(
    ui: &mut egui::Ui,
    form: impl FnOnce(&mut egui::Ui) -> R,
) -> R {
    let height = (ui.available_height() - BUTTON_ROW).max(120.0);
    let inner = egui::ScrollArea::vertical()
        .max_height(height)
        .auto_shrink([false, true])
        .show(ui, form)
        .inner;
    ui.separator();
    inner
}

/// The bitrate field, in kbit/s as typed, to bit/s.
fn parse_bitrate(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(k) if settings::BITRATE_RANGE.contains(&k.saturating_mul(1000)) => Ok(k * 1000),
        _ => Err(t("bad-bitrate")),
    }
}

/// The UDP port field: empty (or 0) means any free port.
fn parse_udp_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("any") {
        return Ok(0);
    }
    text.parse::<u16>().map_err(|_| t("bad-udp-port"))
}

/// The keepalive field: empty means the default (every 15 s).
fn parse_keepalive(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(k) if settings::KEEPALIVE_RANGE.contains(&k) => Ok(Some(k)),
        _ => Err(t("bad-keepalive")),
    }
}

/// A labelled one-line text field, as a grid row.
fn text_row(ui: &mut egui::Ui, label: &str, text: &mut String, hint: &str) {
    let label = ui.label(label);
    ui.add(egui::TextEdit::singleline(text).hint_text(hint))
        .labelled_by(label.id);
    ui.end_row();
}

/// The problem with the field above, as a grid row of its own; whether there is none.
fn problem_row(ui: &mut egui::Ui, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(problem) => {
            ui.label("");
            error_line(ui, &problem);
            ui.end_row();
            false
        }
    }
}

fn device_picker(
    ui: &mut egui::Ui,
    label: egui::Id,
    choice: &mut Option<String>,
    devices: &[DeviceChoice],
) {
    // Settings from before ids were kept hold a device's name: it still opens, and is shown.
    let current = choice.as_deref().map(|saved| {
        devices
            .iter()
            .find(|d| d.id == saved || d.label == saved)
            .map_or_else(
                || tr("device-missing", &[("device", &saved)]),
                |d| d.label.clone(),
            )
    });
    let shown = current.clone().unwrap_or_else(|| t("system-default"));
    egui::ComboBox::from_id_salt(label)
        .selected_text(shown)
        .width(220.0)
        .show_ui(ui, |ui| {
            ui.selectable_value(choice, None, t("system-default"));
            for d in devices {
                let selected = choice.as_deref().is_some_and(|c| c == d.id || c == d.label);
                if ui.selectable_label(selected, &d.label).clicked() {
                    *choice = Some(d.id.clone());
                }
            }
            // A saved device that is not present now stays selectable, marked missing.
            if let (Some(saved), Some(text)) = (choice.clone(), current)
                && !devices.iter().any(|d| d.id == saved || d.label == saved)
            {
                ui.selectable_value(choice, Some(saved), text);
            }
        })
        .response
        .labelled_by(label);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advanced_numbers_are_checked_as_typed() {
        assert_eq!(parse_bitrate(" 24 "), Ok(24_000));
        assert!(parse_bitrate("900").is_err());
        assert!(parse_bitrate("2x").is_err());
        assert_eq!(parse_keepalive(""), Ok(None));
        assert_eq!(parse_keepalive("10"), Ok(Some(10)));
        assert!(parse_keepalive("0").is_err());
    }
}
