//! First run: who you are and which server (the settings form's basic fields).

use super::PinholeApp;
use super::i18n::t;

impl PinholeApp {
    pub(super) fn setup_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading(t("welcome"));
        let valid = super::settings_view::scrolled_above_buttons(ui, |ui| {
            ui.label(t("welcome-what"));
            ui.label(t("welcome-server"));
            ui.add_space(8.0);
            self.file_error_ui(ui);
            if let Some(peer) = &self.state.pending_call {
                ui.label(super::words::call_after_setup(peer));
            }
            let valid = self.basic_fields_ui(ui);
            ui.add_space(6.0);
            self.device_tests_ui(ui);
            ui.add_space(6.0);
            self.connection_test_ui(ui, valid);
            valid
        });
        let hint = super::keys::hint(ui, &t("save-and-start-hint"), super::keys::SAVE);
        let save = ui
            .add_enabled(valid, egui::Button::new(t("save-and-start")))
            .on_hover_text(hint)
            .clicked();
        if save || (valid && super::keys::pressed(ui, super::keys::SAVE)) {
            self.save();
        }
    }
}
