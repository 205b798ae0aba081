//! The desktop app (eframe/egui). It holds view state only; calls run in the engine.

use eframe::egui;
use pinhole::invite::Invite;
use pinhole::settings;
use pinhole::ui::tray::{Tray, TrayAction};
use pinhole::ui::{DeviceList, PinholeApp, handoff};

const APP_NAME: &str = "Pinhole";

/// Opens the main window and runs until it is closed; with `invite`, it opens on the
/// invite's confirmation. It listens on `socket` for links opened while it runs.
pub(crate) fn run(
    invite: Option<Invite>,
    socket: Option<std::path::PathBuf>,
) -> Result<(), eframe::Error> {
    let started = std::time::Instant::now();
    // The window's words: PINHOLE_LANG, else the system locale (English when we lack it).
    pinhole::ui::i18n::use_system_language();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(APP_NAME)
            .with_inner_size([460.0, 620.0])
            .with_min_inner_size([320.0, 400.0])
            .with_app_id("pinhole")
            .with_icon(icon()),
        // Fonts for the scripts egui's own lack come from pinhole::ui::fonts (guarded).
        system_font_fallback: false,
        ..Default::default()
    };
    eframe::run_native(
        APP_NAME,
        options,
        Box::new(move |cc| {
            // Names and messages in any script: system fonts fill in what egui's fonts lack.
            cc.egui_ctx
                .add_font_provider(pinhole::ui::fonts::system_fallback());
            let mut window = Window::new(started, cc.egui_ctx.clone(), invite);
            window.listen(socket.as_deref(), cc.egui_ctx.clone());
            Ok(Box::new(window))
        }),
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
    /// When `run` was entered, until the first frame is drawn (then logged).
    started: Option<std::time::Instant>,
    /// Frame times over the last few seconds, logged at debug level on target
    /// `pinhole::frames` (for measuring; off by default).
    period: FramePeriod,
    /// Links opened while the app runs (a second `pinhole LINK` hands them over).
    handoff: Option<handoff::Listener>,
    /// The tray icon (where the desktop hosts one).
    tray: Tray,
}

#[derive(Debug)]
struct FramePeriod {
    since: std::time::Instant,
    frames: u32,
    cpu_total: f32,
    cpu_max: f32,
    show_before: pinhole::ui::FrameStats,
}

impl FramePeriod {
    const LENGTH: std::time::Duration = std::time::Duration::from_secs(5);

    fn new(show_before: pinhole::ui::FrameStats) -> Self {
        Self {
            since: std::time::Instant::now(),
            frames: 0,
            cpu_total: 0.0,
            cpu_max: 0.0,
            show_before,
        }
    }
}

impl Window {
    fn new(started: std::time::Instant, ctx: egui::Context, invite: Option<Invite>) -> Self {
        let tray_ctx = ctx.clone();
        // Devices are listed on a thread: cpal can take a while to probe them.
        let app = settings::default_path()
            .map(|path| {
                let wake = {
                    let ctx = ctx.clone();
                    std::sync::Arc::new(move || ctx.request_repaint())
                };
                let mut app = PinholeApp::new(path, DeviceList::default())
                    .with_repaint(ctx)
                    .with_notifier(pinhole::ui::notify::Notifier::start(APP_NAME, wake))
                    .list_devices_in_background();
                if let Some(invite) = invite {
                    app.open_invite(invite);
                }
                app
            })
            .map_err(|err| err.to_string());
        let icon = icon();
        let wake = std::sync::Arc::new(move || tray_ctx.request_repaint());
        let tray = Tray::start(
            (icon.width == icon.height && icon.width > 0).then_some((icon.width, icon.rgba)),
            wake,
        );
        Self {
            app,
            started: Some(started),
            period: FramePeriod::new(pinhole::ui::FrameStats::default()),
            handoff: None,
            tray,
        }
    }

    /// Takes links handed over on `socket`. Without it the app works as before; a second
    /// `pinhole` then starts a second app.
    fn listen(&mut self, socket: Option<&std::path::Path>, ctx: egui::Context) {
        let Some(socket) = socket else { return };
        let wake = std::sync::Arc::new(move || ctx.request_repaint());
        match handoff::Listener::bind(socket, wake) {
            Ok(listener) => self.handoff = Some(listener),
            Err(e) => tracing::warn!(
                "links opened while the app runs will start another app: {}: {e}",
                socket.display()
            ),
        }
    }

    /// Shows the app's state on the tray icon, and does what was chosen there.
    fn follow_tray(&mut self, ctx: &egui::Context) {
        if let Ok(app) = &self.app {
            self.tray.show(app.tray_state());
        }
        while let Some(action) = self.tray.poll() {
            match action {
                TrayAction::Open => {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Minimized(false));
                    ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
                }
                TrayAction::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
            }
        }
    }

    /// Shows links handed over by a second `pinhole`, and comes to the front for them.
    fn take_handed_over(&mut self, ctx: &egui::Context) {
        let Some(listener) = &self.handoff else {
            return;
        };
        while let Some(request) = listener.try_request() {
            if let (handoff::Request::Open(invite), Ok(app)) = (request, &mut self.app) {
                app.open_invite(invite);
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Minimized(false));
            ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
        }
    }
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.take_handed_over(&ui.ctx().clone());
        self.follow_tray(ui.ctx());
        egui::CentralPanel::default().show(ui, |ui| match &mut self.app {
            Ok(app) => app.show(ui),
            Err(err) => {
                ui.heading(APP_NAME);
                ui.colored_label(ui.visuals().error_fg_color, err.as_str());
            }
        });
        if let Some(started) = self.started.take() {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "first frame drawn"
            );
        }
        self.log_frame_times(frame);
    }
}

impl Window {
    /// eframe's CPU time of the previous frame (views, layout, tessellation) and the time in
    /// `PinholeApp::show`, summed over a period and logged.
    fn log_frame_times(&mut self, frame: &eframe::Frame) {
        let p = &mut self.period;
        if let Some(cpu) = frame.info().cpu_usage {
            p.frames += 1;
            p.cpu_total += cpu;
            p.cpu_max = p.cpu_max.max(cpu);
        }
        if p.since.elapsed() < FramePeriod::LENGTH {
            return;
        }
        if let Ok(app) = &self.app {
            let now = app.frame_stats();
            let frames = now.frames.saturating_sub(p.show_before.frames).max(1);
            let show_mean = now.total.saturating_sub(p.show_before.total) / frames as u32;
            tracing::debug!(
                target: "pinhole::frames",
                view = ?app.view(),
                frames = p.frames,
                cpu_mean_us = (p.cpu_total / p.frames.max(1) as f32 * 1e6) as u64,
                cpu_max_us = (p.cpu_max * 1e6) as u64,
                show_mean_us = show_mean.as_micros() as u64,
                "frame times"
            );
            self.period = FramePeriod::new(now);
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Ok(app) = &self.app {
            let f = app.frame_stats();
            tracing::info!(
                frames = f.frames,
                mean_us = f.mean().as_micros() as u64,
                max_us = f.max.as_micros() as u64,
                "frame time of the views"
            );
        }
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
