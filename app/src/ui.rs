//! The desktop app's views (egui). They hold view state only: settings go through
//! [`crate::settings`], calls will run in the engine off the UI thread.
//!
//! [`PinholeApp::show`] draws one frame into a `Ui`; the binary wraps it in an `eframe::App`, and
//! the tests drive it with `egui_kittest` without a window.

use std::path::PathBuf;

use egui::RichText;

use crate::settings::{self, AddrError, Settings};

/// Which view fills the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// First run: no settings file yet.
    Setup,
    /// Who you are, where you are registered, a field to call a name.
    Main,
    /// The same fields as setup, plus advanced ones.
    Settings,
}

/// The devices the pickers offer, as the audio layer lists them.
#[derive(Debug, Clone, Default)]
pub struct DeviceList {
    /// Capture device names.
    pub inputs: Vec<String>,
    /// Playback device names.
    pub outputs: Vec<String>,
}

/// The whole app's view state.
#[derive(Debug)]
pub struct PinholeApp {
    path: PathBuf,
    saved: Option<Settings>,
    form: Settings,
    /// Text of the advanced numeric fields, kept as typed so that a half-typed number is not lost.
    bitrate_text: String,
    keepalive_text: String,
    devices: DeviceList,
    view: View,
    /// A problem loading or saving the settings file, shown until the next successful save.
    file_error: Option<String>,
}

impl PinholeApp {
    /// Starts from the settings file at `path`: its absence means first run. A file that cannot
    /// be read is reported in the setup view and left untouched until the user saves.
    pub fn new(path: PathBuf, devices: DeviceList) -> Self {
        let (saved, file_error) = match settings::load(&path) {
            Ok(saved) => (saved, None),
            Err(err) => (
                None,
                Some(format!("Your settings could not be read: {err}")),
            ),
        };
        let form = saved.clone().unwrap_or_default();
        let view = if saved.is_some() {
            View::Main
        } else {
            View::Setup
        };
        let mut app = Self {
            path,
            saved,
            bitrate_text: String::new(),
            keepalive_text: String::new(),
            form,
            devices,
            view,
            file_error,
        };
        app.reset_form_text();
        app
    }

    /// The view on screen.
    pub fn view(&self) -> View {
        self.view
    }

    /// The settings as last saved, if any.
    pub fn saved(&self) -> Option<&Settings> {
        self.saved.as_ref()
    }

    fn reset_form_text(&mut self) {
        self.bitrate_text = (self.form.advanced.bitrate_bps / 1000).to_string();
        self.keepalive_text = self
            .form
            .advanced
            .keepalive_s
            .map(|k| k.to_string())
            .unwrap_or_default();
    }

    /// Draws one frame.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        match self.view {
            View::Setup => self.setup_view(ui),
            View::Main => self.main_view(ui),
            View::Settings => self.settings_view(ui),
        }
    }

    fn setup_view(&mut self, ui: &mut egui::Ui) {
        ui.heading("Welcome to Pinhole");
        ui.label("Pinhole calls people straight through their routers. Tell it who you are.");
        ui.add_space(8.0);
        if let Some(err) = &self.file_error {
            ui.colored_label(ui.visuals().error_fg_color, err);
        }
        let valid = self.basic_fields(ui);
        ui.add_space(8.0);
        if ui
            .add_enabled(valid, egui::Button::new("Save and start"))
            .clicked()
        {
            self.save();
        }
    }

    fn settings_view(&mut self, ui: &mut egui::Ui) {
        ui.heading("Settings");
        if let Some(err) = &self.file_error {
            ui.colored_label(ui.visuals().error_fg_color, err);
        }
        let basic_ok = self.basic_fields(ui);
        let advanced_ok = self.advanced_fields(ui);
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui
                .add_enabled(basic_ok && advanced_ok, egui::Button::new("Save"))
                .clicked()
            {
                self.save();
            }
            if ui.button("Cancel").clicked() {
                self.form = self.saved.clone().unwrap_or_default();
                self.reset_form_text();
                self.view = View::Main;
            }
        });
    }

    fn main_view(&mut self, ui: &mut egui::Ui) {
        let name = self
            .saved
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let server = self
            .saved
            .as_ref()
            .map(|s| s.server.clone())
            .unwrap_or_default();
        ui.heading(format!("You are {name}"));
        if server.is_empty() {
            ui.label("Server: built into this app (this machine only)");
        } else {
            ui.label(format!("Server: {server}"));
        }
        ui.add_space(8.0);
        if ui.button("Settings").clicked() {
            self.form = self.saved.clone().unwrap_or_default();
            self.reset_form_text();
            self.view = View::Settings;
        }
    }

    /// Server, name and devices. Returns whether they are valid; each problem is shown under
    /// its field as the user types.
    fn basic_fields(&mut self, ui: &mut egui::Ui) -> bool {
        let mut valid = true;
        egui::Grid::new("basic")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let label = ui.label("Server");
                ui.add(
                    egui::TextEdit::singleline(&mut self.form.server)
                        .hint_text("empty: built-in server")
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
                ui.end_row();
                match self.form.server_addr() {
                    Ok(_) => {}
                    Err(err) => {
                        valid = false;
                        ui.label("");
                        error_line(ui, &server_message(&err));
                        ui.end_row();
                    }
                }

                let label = ui.label("Your name");
                ui.add(egui::TextEdit::singleline(&mut self.form.name).desired_width(220.0))
                    .labelled_by(label.id);
                ui.end_row();
                if let Err(msg) = settings::validate_name(&self.form.name) {
                    valid = false;
                    ui.label("");
                    error_line(ui, &msg);
                    ui.end_row();
                }

                let label = ui.label("Microphone");
                device_picker(
                    ui,
                    label.id,
                    &mut self.form.input_device,
                    &self.devices.inputs,
                );
                ui.end_row();
                let label = ui.label("Speaker");
                device_picker(
                    ui,
                    label.id,
                    &mut self.form.output_device,
                    &self.devices.outputs,
                );
                ui.end_row();
            });
        valid
    }

    fn advanced_fields(&mut self, ui: &mut egui::Ui) -> bool {
        let mut valid = true;
        egui::CollapsingHeader::new("Advanced").show(ui, |ui| {
            egui::Grid::new("advanced")
                .num_columns(2)
                .spacing([12.0, 6.0])
                .show(ui, |ui| {
                    ui.label("Frame length");
                    ui.horizontal(|ui| {
                        for ms in settings::FRAME_MS_CHOICES {
                            ui.radio_value(
                                &mut self.form.advanced.frame_ms,
                                ms,
                                format!("{ms} ms"),
                            );
                        }
                    });
                    ui.end_row();

                    let label = ui.label("Bitrate (kbit/s)");
                    ui.text_edit_singleline(&mut self.bitrate_text)
                        .labelled_by(label.id);
                    ui.end_row();
                    match self.bitrate_text.trim().parse::<u32>() {
                        Ok(k) if settings::BITRATE_RANGE.contains(&k.saturating_mul(1000)) => {
                            self.form.advanced.bitrate_bps = k * 1000;
                        }
                        _ => {
                            valid = false;
                            ui.label("");
                            error_line(ui, "bitrate is a number from 6 to 510 kbit/s");
                            ui.end_row();
                        }
                    }

                    let label = ui.label("Keepalive (s)");
                    ui.add(
                        egui::TextEdit::singleline(&mut self.keepalive_text)
                            .hint_text("empty: measured"),
                    )
                    .labelled_by(label.id);
                    ui.end_row();
                    let text = self.keepalive_text.trim();
                    if text.is_empty() {
                        self.form.advanced.keepalive_s = None;
                    } else {
                        match text.parse::<u32>() {
                            Ok(k) if settings::KEEPALIVE_RANGE.contains(&k) => {
                                self.form.advanced.keepalive_s = Some(k);
                            }
                            _ => {
                                valid = false;
                                ui.label("");
                                error_line(ui, "keepalive is empty (measured) or 1 to 300 seconds");
                                ui.end_row();
                            }
                        }
                    }

                    let label = ui.label("UDP port");
                    ui.add(
                        egui::DragValue::new(&mut self.form.advanced.udp_port)
                            .range(0..=65535)
                            .custom_formatter(|v, _| {
                                if v == 0.0 {
                                    "any".into()
                                } else {
                                    format!("{v}")
                                }
                            }),
                    )
                    .labelled_by(label.id);
                    ui.end_row();

                    ui.label("Built-in server");
                    ui.checkbox(
                        &mut self.form.advanced.embedded_server_lan,
                        "reachable from the local network",
                    );
                    ui.end_row();
                });
        });
        valid
    }

    fn save(&mut self) {
        match settings::save(&self.path, &self.form) {
            Ok(()) => {
                self.saved = Some(self.form.clone());
                self.file_error = None;
                self.view = View::Main;
            }
            Err(err) => self.file_error = Some(format!("Settings not saved: {err}")),
        }
    }
}

fn error_line(ui: &mut egui::Ui, text: &str) {
    ui.label(
        RichText::new(text)
            .color(ui.visuals().error_fg_color)
            .small(),
    );
}

/// The server field's message: the empty field is valid (built-in server), so only real
/// problems reach here.
fn server_message(err: &AddrError) -> String {
    let mut msg = err.to_string();
    if let Some(first) = msg.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    msg
}

fn device_picker(
    ui: &mut egui::Ui,
    label: egui::Id,
    choice: &mut Option<String>,
    names: &[String],
) {
    let shown = choice.clone().unwrap_or_else(|| "System default".into());
    egui::ComboBox::from_id_salt(label)
        .selected_text(shown)
        .width(220.0)
        .show_ui(ui, |ui| {
            ui.selectable_value(choice, None, "System default");
            for name in names {
                ui.selectable_value(choice, Some(name.clone()), name);
            }
            // A saved device that is not present now stays selectable, marked missing.
            if let Some(current) = choice.clone()
                && !names.contains(&current)
            {
                ui.selectable_value(
                    choice,
                    Some(current.clone()),
                    format!("{current} (missing)"),
                );
            }
        })
        .response
        .labelled_by(label);
}
