//! The desktop app (eframe/egui). It holds view state only; calls run in the engine.

use eframe::egui;
use pinhole::settings;
use pinhole::ui::{DeviceList, PinholeApp};

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
        Box::new(|_cc| Ok(Box::new(Window::new()))),
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

/// The eframe side of the app: one window showing [`PinholeApp`]'s views.
#[derive(Debug)]
struct Window {
    app: Result<PinholeApp, String>,
}

impl Window {
    fn new() -> Self {
        let app = settings::default_path()
            .map(|path| PinholeApp::new(path, DeviceList::default()))
            .map_err(|err| err.to_string());
        Self { app }
    }
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::CentralPanel::default().show(ui, |ui| match &mut self.app {
            Ok(app) => app.show(ui),
            Err(err) => {
                ui.heading(APP_NAME);
                ui.colored_label(ui.visuals().error_fg_color, err.as_str());
            }
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
