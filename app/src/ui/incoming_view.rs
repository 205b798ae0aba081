//! Someone calls: who, Accept and Reject. The window asks for attention once when it is not
//! focused.

use egui::{RichText, UserAttentionType, ViewportCommand};

use super::PinholeApp;
use super::state::{Action, Call};
use super::widgets::{GOOD, STOP, working};

impl PinholeApp {
    pub(super) fn incoming_ui(&mut self, ui: &mut egui::Ui) {
        let Call::Incoming { from, answered } = &self.state.call else {
            return;
        };
        let (from, answered) = (from.clone(), *answered);
        let focused = ui.input(|i| i.viewport().focused.unwrap_or(true));
        if !focused && !self.attention {
            ui.ctx()
                .send_viewport_cmd(ViewportCommand::RequestUserAttention(
                    UserAttentionType::Critical,
                ));
            self.attention = true;
        }
        ui.vertical_centered(|ui| {
            ui.add_space(24.0);
            super::widgets::who(ui, "Incoming call", &from);
            ui.add_space(24.0);
        });
        if answered {
            ui.vertical_centered(|ui| {
                working(ui);
                ui.label("Connecting…");
            });
            return;
        }
        let mut action = None;
        ui.columns(2, |cols| {
            let size = egui::vec2(120.0, 40.0);
            for (col, (text, fill, what)) in cols.iter_mut().zip([
                ("Accept", GOOD, Action::Accept),
                ("Reject", STOP, Action::Reject),
            ]) {
                col.vertical_centered(|ui| {
                    let button = egui::Button::new(
                        RichText::new(text).color(egui::Color32::WHITE).size(18.0),
                    );
                    if ui.add(button.fill(fill).min_size(size)).clicked() {
                        action = Some(what);
                    }
                });
            }
        });
        if let Some(action) = action {
            self.act(action);
            ui.ctx()
                .send_viewport_cmd(ViewportCommand::RequestUserAttention(
                    UserAttentionType::Reset,
                ));
        }
    }
}
