//! The desktop app (eframe/egui). It holds view state only; calls run in the engine.

use eframe::egui;

const APP_NAME: &str = "Pinhole";

/// Opens the main window and runs until it is closed.
pub(crate) fn run() -> Result<(), eframe::Error> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(APP_NAME)
            .with_inner_size([420.0, 560.0])
            .with_min_inner_size([320.0, 400.0])
            .with_app_id("pinhole")
            .with_icon(icon()),
        ..Default::default()
    };
    eframe::run_native(
        APP_NAME,
        options,
        Box::new(|_cc| Ok(Box::new(PinholeApp::default()))),
    )
}

/// The window icon, embedded from `assets/`. A broken image only costs the icon, never the app.
fn icon() -> egui::IconData {
    eframe::icon_data::from_png_bytes(include_bytes!("../../assets/pinhole.png")).unwrap_or_else(
        |err| {
            tracing::warn!("window icon not loaded: {err}");
            egui::IconData::default()
        },
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

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_icon_decodes_at_256_px() {
        let icon = super::icon();
        assert_eq!((icon.width, icon.height), (256, 256));
        assert_eq!(icon.rgba.len(), 256 * 256 * 4);
    }
}
