//! Someone calls: who, Accept (Enter) and Reject (Esc). The window asks for attention once
//! when it is not focused.

use std::time::Instant;

use egui::{RichText, UserAttentionType, ViewportCommand};

use super::i18n::t;
use super::state::{Action, Call};
use super::widgets::{Fill, icons, named, with_icon, working};
use super::{PinholeApp, keys};

impl PinholeApp {
    pub(super) fn incoming_ui(&mut self, ui: &mut egui::Ui) {
        let Call::Incoming { from, answered } = &self.state.call else {
            return;
        };
        let (from, answered) = (from.clone(), *answered);
        let since = *self.incoming_since.get_or_insert_with(Instant::now);
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
            super::widgets::who(ui, &t("incoming-call"), &from);
            ui.add_space(24.0);
        });
        if answered {
            ui.vertical_centered(|ui| {
                working(ui);
                ui.label(t("connecting"));
            });
            return;
        }
        let mut action = None;
        if keys::pressed(ui, keys::REJECT) {
            action = Some(Action::Reject);
        } else if since.elapsed() >= keys::ACCEPT_GRACE && keys::pressed(ui, keys::ACCEPT) {
            action = Some(Action::Accept);
        }
        let accept_hint = keys::hint(ui, &t("accept-hint"), keys::ACCEPT);
        let reject_hint = keys::hint(ui, &t("reject-hint"), keys::REJECT);
        ui.columns(2, |cols| {
            let size = egui::vec2(120.0, 40.0);
            for (col, (text, icon, fill, what, hint)) in cols.iter_mut().zip([
                (
                    t("accept"),
                    icons::CALL,
                    Fill::Good,
                    Action::Accept,
                    &accept_hint,
                ),
                (
                    t("reject"),
                    icons::REJECT,
                    Fill::Stop,
                    Action::Reject,
                    &reject_hint,
                ),
            ]) {
                col.vertical_centered(|ui| {
                    let face = RichText::new(with_icon(icon, &text)).size(18.0);
                    let button = super::widgets::big_button(ui, face, fill, size);
                    if named(button, &text).on_hover_text(hint).clicked() {
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
