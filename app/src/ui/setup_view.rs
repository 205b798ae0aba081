//! First run: who you are and which server (the settings form's basic fields).

use super::PinholeApp;

impl PinholeApp {
    pub(super) fn setup_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Welcome to Pinhole");
        ui.label("Pinhole calls people straight through their routers. Tell it who you are.");
        ui.label(
            "Leave the server empty to use the one built into this app: call echo to hear \
             yourself.",
        );
        ui.add_space(8.0);
        self.file_error_ui(ui);
        if let Some(peer) = &self.state.pending_call {
            ui.label(super::words::call_after_setup(peer));
        }
        let valid = self.basic_fields_ui(ui);
        ui.add_space(8.0);
        if ui
            .add_enabled(valid, egui::Button::new("Save and start"))
            .clicked()
        {
            self.save();
        }
    }
}
