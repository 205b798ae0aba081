//! A ringing or missed call while the window is in the background: desktop notifications
//! ([`super::notify`]), and what the person does with them (Accept, Reject, Call back, or a
//! click that brings the window forward).

use egui::ViewportCommand;

use super::PinholeApp;
use super::notify::Reply;
use super::state::{Action, Call};

impl PinholeApp {
    /// Shows a notification for a call that rings while the window is in the background and
    /// closes it once the call is answered, rejected or gone; carries out the replies.
    pub(super) fn notifications(&mut self, ui: &egui::Ui) {
        self.focused = ui.input(|i| i.viewport().focused.unwrap_or(true));
        let Some(notifier) = &self.notifier else {
            return;
        };
        let ringing = match &self.state.call {
            Call::Incoming {
                from,
                answered: false,
            } => Some(from.clone()),
            _ => None,
        };
        match (&ringing, &self.notified_incoming) {
            (Some(from), None) if !self.focused => {
                notifier.incoming(from);
                self.notified_incoming = Some(from.clone());
            }
            (None, Some(_)) => {
                notifier.withdraw();
                self.notified_incoming = None;
            }
            _ => {}
        }
        let replies: Vec<Reply> = std::iter::from_fn(|| notifier.poll()).collect();
        for reply in replies {
            let action = match reply {
                Reply::Accept if ringing.is_some() => Some(Action::Accept),
                Reply::Reject if ringing.is_some() => Some(Action::Reject),
                Reply::CallBack(name) if matches!(self.state.call, Call::Idle) => {
                    Some(Action::Call(name))
                }
                // A reply to a call that is over, or a click on the notification.
                _ => None,
            };
            // Whatever was chosen, it goes on in the window.
            if !matches!(action, Some(Action::Reject)) {
                ui.ctx()
                    .send_viewport_cmd(ViewportCommand::Minimized(false));
                ui.ctx().send_viewport_cmd(ViewportCommand::Focus);
            }
            if let Some(action) = action {
                self.act(action);
            }
        }
    }

    /// A call rang out unanswered: said on the desktop when the window is in the background
    /// (in the window, the main view says it).
    pub(super) fn notify_missed(&mut self, peer: &str) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        // The ringing call's notification goes first: one call, one notification at a time.
        if self.notified_incoming.take().is_some() {
            notifier.withdraw();
        }
        if !self.focused {
            notifier.missed(peer);
        }
    }
}
