//! Small pieces the views share: a level meter, a "working" mark, an error line.

use std::time::Duration;

use egui::{Color32, RichText};
use media::audio::LevelMeter;

use super::theme::palette;
use crate::settings::ServerListError;

/// Meters and timers repaint this often while they move (20 Hz).
pub(super) const METER_REPAINT: Duration = Duration::from_millis(50);
/// Good news in text ("online", "encrypted"), legible in the current theme.
pub(super) fn good_text(ui: &egui::Ui) -> Color32 {
    palette(ui.visuals()).good
}

/// What a big button means: its fill colour (with white text).
#[derive(Debug, Clone, Copy)]
pub(super) enum Fill {
    /// Green: accept, call, use.
    Good,
    /// Red: hang up, reject, cancel.
    Stop,
}

impl Fill {
    fn colors(self, ui: &egui::Ui) -> (Color32, Color32) {
        let p = palette(ui.visuals());
        match self {
            Fill::Good => (p.good_fill, p.on_fill),
            Fill::Stop => (p.stop_fill, p.on_fill),
        }
    }
}

/// A level meter: the peak on a dB scale (-60 dBFS empty, 0 dBFS full).
pub(super) fn meter_bar(ui: &mut egui::Ui, meter: &LevelMeter, label: egui::Id) {
    let peak = meter.peak().max(1e-6);
    let db = 20.0 * peak.log10();
    let fill = ((db + 60.0) / 60.0).clamp(0.0, 1.0);
    let color = if db > -3.0 {
        Color32::from_rgb(200, 60, 50)
    } else {
        palette(ui.visuals()).good_fill
    };
    ui.add(
        egui::ProgressBar::new(fill)
            .desired_width(200.0)
            .desired_height(10.0)
            .fill(color),
    )
    .labelled_by(label);
}

/// A small "working" mark that moves without asking for an immediate repaint (egui's spinner
/// repaints every frame; this one four times a second).
pub(super) fn working(ui: &mut egui::Ui) {
    let phase = (ui.input(|i| i.time) * 4.0) as usize % 4;
    ui.label(RichText::new("·".repeat(phase % 3 + 1)).monospace());
    ui.ctx().request_repaint_after(Duration::from_millis(250));
}

/// A problem, in body-size text of the error colour (4.5:1 or more on the panel in both
/// themes).
pub(super) fn error_line(ui: &mut egui::Ui, text: &str) {
    ui.label(RichText::new(text).color(ui.visuals().error_fg_color));
}

/// A loud warning: large text in the warning colour, in a framed box that fills the width.
pub(super) fn warning_banner(ui: &mut egui::Ui, text: &str, add: impl FnOnce(&mut egui::Ui)) {
    let warn = ui.visuals().warn_fg_color;
    egui::Frame::new()
        .fill(warn.gamma_multiply(super::theme::BANNER_TINT))
        .stroke(egui::Stroke::new(2.0, warn))
        .corner_radius(6.0)
        .inner_margin(10.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(RichText::new(text).color(warn).strong().size(15.0));
            add(ui);
        });
}

/// A big button with white text on the colour of what it does.
pub(super) fn big_button(
    ui: &mut egui::Ui,
    text: impl Into<RichText>,
    fill: Fill,
    size: egui::Vec2,
) -> egui::Response {
    let (fill, on) = fill.colors(ui);
    ui.add(
        egui::Button::new(text.into().color(on))
            .fill(fill)
            .min_size(size),
    )
}

/// A name in large type under a small line saying what is going on.
pub(super) fn who(ui: &mut egui::Ui, what: &str, name: &str) {
    ui.label(what);
    ui.heading(RichText::new(name).size(28.0));
}

/// The server field's message: the empty field is valid (built-in server), so only real
/// problems reach here. In a list of several, the entry and its place are named.
pub(super) fn server_message(err: &ServerListError) -> String {
    let problem = super::words::server_problem(&err.error);
    if err.count <= 1 {
        return problem;
    }
    super::i18n::tr(
        "server-entry-problem",
        &[
            ("entry", &format!("{:?}", err.entry)),
            ("position", &err.position.to_string()),
            ("count", &err.count.to_string()),
            ("problem", &problem),
        ],
    )
}

/// The icons on buttons: glyphs of egui's bundled emoji fonts (the test below checks each is
/// there), drawn before a button's words. Screen readers get the words alone ([`named`]).
pub(super) mod icons {
    pub(in crate::ui) const SETTINGS: &str = "⚙";
    pub(in crate::ui) const CALL: &str = "📞";
    pub(in crate::ui) const REJECT: &str = "✖";
    pub(in crate::ui) const MUTED: &str = "🔇";
    pub(in crate::ui) const MICROPHONE: &str = "🎤";
    pub(in crate::ui) const SOUND: &str = "🔊";
    pub(in crate::ui) const NETWORK: &str = "🌐";
    pub(in crate::ui) const COPY: &str = "📋";
    /// Every icon, for the test.
    #[cfg(test)]
    pub(in crate::ui) const ALL: [&str; 8] = [
        SETTINGS, CALL, REJECT, MUTED, MICROPHONE, SOUND, NETWORK, COPY,
    ];
}

/// `icon` and `text` as a button's face.
pub(super) fn with_icon(icon: &str, text: &str) -> String {
    format!("{icon}  {text}")
}

/// Gives a widget `name` as its accessible name (a button whose face has an icon is read as
/// its words alone).
pub(super) fn named(response: egui::Response, name: &str) -> egui::Response {
    let enabled = response.enabled();
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, enabled, name));
    response
}

#[cfg(test)]
mod tests {
    use super::icons;

    #[test]
    fn every_icon_is_in_the_bundled_fonts() {
        let ctx = egui::Context::default();
        let mut missing = Vec::new();
        let mut output = ctx.run_ui(egui::RawInput::default(), |ui| {
            let font = egui::FontId::proportional(15.0);
            ui.fonts_mut(|f| {
                for icon in icons::ALL {
                    if !f.has_glyphs(&font, icon) {
                        missing.push(icon);
                    }
                }
            });
        });
        output.textures_delta.clear();
        assert!(missing.is_empty(), "no glyph for {missing:?}");
    }
}
