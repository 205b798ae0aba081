//! The desktop app (eframe/egui). It holds view state only; calls run in the engine.

use eframe::egui;

const APP_NAME: &str = "Pinhole";

/// Opens the main window and runs until it is closed.
pub(crate) fn run() -> Result<(), eframe::Error> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(APP_NAME)
            .with_inner_size([420.0, 560.0])
            .with_min_inner_size([320.0, 400.0]),
        ..Default::default()
    };
    eframe::run_native(
        APP_NAME,
        options,
        Box::new(|_cc| Ok(Box::new(PinholeApp::default()))),
    )
}

#[derive(Debug, Default)]
struct PinholeApp {}

impl eframe::App for PinholeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading(APP_NAME);
            ui.label("A softphone that calls straight through NAT.");
            ui.separator();
            ui.label(format!("Version {}", env!("CARGO_PKG_VERSION")));
        });
    }
}
