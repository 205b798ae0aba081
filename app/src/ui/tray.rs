//! A tray icon that says whether the app is online, ringing or in a call, with a menu to bring
//! the window forward or quit: a StatusNotifierItem on the session bus (`ksni`, over the same
//! zbus as the notifications). KDE Plasma, Xfce, LXQt, Cinnamon, MATE, sway/waybar and GNOME
//! with its AppIndicator extension host them, on X11 and Wayland alike; where nothing hosts
//! them, no icon shows and the app works as before.
//!
//! ```text
//!   UI thread: Tray::show(state) --(only when it changed)--> tray thread: ksni Handle::update
//!                                                              (D-Bus: NewStatus, NewToolTip..)
//!   UI thread: Tray::poll() <-- wake() <-- Activate / menu "Open Pinhole", "Quit" (ksni thread)
//! ```
//!
//! Nothing here waits on the UI thread: connecting and every update run on the tray's thread.

use std::sync::mpsc;

use super::PinholeApp;
use super::i18n::{t, tr};
use super::sound::Wake;
use super::state::{Call, Link};

impl PinholeApp {
    /// What the tray icon should say now: the call first, then the registration.
    pub fn tray_state(&self) -> TrayState {
        match &self.state.call {
            Call::Incoming {
                from,
                answered: false,
            } => return TrayState::Ringing(from.clone()),
            Call::Incoming { from: peer, .. } | Call::Placing { peer, .. } => {
                return TrayState::InCall(peer.clone());
            }
            Call::Up(up) => return TrayState::InCall(up.peer.clone()),
            Call::Idle => {}
        }
        match &self.state.link {
            Link::Off | Link::Connecting { .. } => TrayState::Connecting,
            Link::Registered { .. } => TrayState::Online,
            Link::Offline { .. } => TrayState::Offline(Offline::ServerLost),
            Link::Replaced { .. } => TrayState::Offline(Offline::Replaced),
            Link::Failed { .. } => TrayState::Offline(Offline::Unreachable),
        }
    }
}

/// What the tray icon says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrayState {
    /// Connecting to the server (or not yet started).
    Connecting,
    /// Registered: calls can come in.
    Online,
    /// Not registered, and why.
    Offline(Offline),
    /// Someone is calling.
    Ringing(String),
    /// In a call with someone (or calling them).
    InCall(String),
}

impl TrayState {
    /// The tooltip's line.
    pub fn words(&self) -> String {
        match self {
            TrayState::Connecting => t("tray-connecting"),
            TrayState::Online => t("tray-online"),
            TrayState::Offline(why) => {
                let why = t(match why {
                    Offline::ServerLost => "tray-server-lost",
                    Offline::Replaced => "tray-replaced",
                    Offline::Unreachable => "tray-unreachable",
                });
                tr("tray-offline", &[("why", &why)])
            }
            TrayState::Ringing(who) => tr("tray-ringing", &[("peer", who)]),
            TrayState::InCall(who) => tr("tray-in-call", &[("peer", who)]),
        }
    }
}

/// Why the app is not registered, as the tray says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offline {
    /// The server went away; the app connects again.
    ServerLost,
    /// The name was registered from another device.
    Replaced,
    /// The server cannot be reached (or refused us).
    Unreachable,
}

/// What the person chose from the tray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayAction {
    /// A click on the icon, or "Open Pinhole": bring the window forward.
    Open,
    /// "Quit": close the app.
    Quit,
}

/// The tray icon; see the module docs.
#[derive(Debug)]
pub struct Tray {
    states: mpsc::Sender<TrayState>,
    actions: mpsc::Receiver<TrayAction>,
    shown: Option<TrayState>,
}

impl Tray {
    /// Starts the tray on the session bus, with `icon` (RGBA, `size` x `size`) as its picture.
    /// Never fails: without a bus the tray thread logs why and ends. `wake` is called when the
    /// person chose something ([`Tray::poll`]).
    pub fn start(icon: Option<(u32, Vec<u8>)>, wake: Wake) -> Tray {
        let (states, state_rx) = mpsc::channel::<TrayState>();
        let (action_tx, actions) = mpsc::channel();
        let icon = icon.map(|(size, rgba)| argb_icon(size, &rgba));
        let spawned = std::thread::Builder::new()
            .name("tray".into())
            .spawn(move || run(icon, action_tx, wake, state_rx));
        if let Err(e) = spawned {
            tracing::warn!("no tray icon: no thread for it: {e}");
        }
        Tray {
            states,
            actions,
            shown: None,
        }
    }

    /// Shows `state` (does nothing when it is the one shown).
    pub fn show(&mut self, state: TrayState) {
        if self.shown.as_ref() != Some(&state) {
            // Fails only when the tray thread ended (no bus): nothing to show on.
            let _ = self.states.send(state.clone());
            self.shown = Some(state);
        }
    }

    /// The next thing the person chose from the tray, if any. Never waits.
    pub fn poll(&self) -> Option<TrayAction> {
        self.actions.try_recv().ok()
    }
}

/// The tray thread: connects, then carries each state to the item.
fn run(
    icon: Option<ksni::Icon>,
    actions: mpsc::Sender<TrayAction>,
    wake: Wake,
    states: mpsc::Receiver<TrayState>,
) {
    use ksni::blocking::TrayMethods;
    let item = Item {
        state: TrayState::Connecting,
        icon,
        actions,
        wake,
    };
    // A desktop whose tray host starts after the app still gets the icon.
    let handle = match item.assume_sni_available(true).spawn() {
        Ok(handle) => handle,
        Err(e) => {
            tracing::info!("no tray icon: {e}");
            return;
        }
    };
    for state in states {
        if handle.update(|item| item.state = state).is_none() {
            return;
        }
    }
    // The app is gone: take the icon away.
    handle.shutdown().wait();
}

/// The StatusNotifierItem.
struct Item {
    state: TrayState,
    icon: Option<ksni::Icon>,
    actions: mpsc::Sender<TrayAction>,
    wake: Wake,
}

impl Item {
    fn choose(&self, action: TrayAction) {
        if self.actions.send(action).is_ok() {
            (self.wake)();
        }
    }
}

impl ksni::Tray for Item {
    fn id(&self) -> String {
        "pinhole".into()
    }

    fn title(&self) -> String {
        "Pinhole".into()
    }

    fn category(&self) -> ksni::Category {
        ksni::Category::Communications
    }

    fn status(&self) -> ksni::Status {
        match self.state {
            TrayState::Ringing(_) => ksni::Status::NeedsAttention,
            _ => ksni::Status::Active,
        }
    }

    fn icon_name(&self) -> String {
        // The installed app's icon (the .deb ships it); the pixmap below where it is not.
        "pinhole".into()
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        self.icon.iter().cloned().collect()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: "Pinhole".into(),
            description: self.state.words(),
            ..Default::default()
        }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        self.choose(TrayAction::Open);
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        use ksni::menu::StandardItem;
        vec![
            StandardItem {
                label: t("tray-open"),
                activate: Box::new(|item: &mut Self| item.choose(TrayAction::Open)),
                ..Default::default()
            }
            .into(),
            ksni::MenuItem::Separator,
            StandardItem {
                label: t("tray-quit"),
                icon_name: "application-exit".into(),
                activate: Box::new(|item: &mut Self| item.choose(TrayAction::Quit)),
                ..Default::default()
            }
            .into(),
        ]
    }
}

/// RGBA rows to the ARGB32 (big-endian) pixmap StatusNotifierItem wants.
fn argb_icon(size: u32, rgba: &[u8]) -> ksni::Icon {
    let data = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[3], p[0], p[1], p[2]])
        .collect();
    let side = i32::try_from(size).unwrap_or(0);
    ksni::Icon {
        width: side,
        height: side,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba_becomes_argb_and_the_words_name_the_state() {
        let icon = argb_icon(1, &[10, 20, 30, 255]);
        assert_eq!((icon.width, icon.height), (1, 1));
        assert_eq!(icon.data, [255, 10, 20, 30]);
        assert_eq!(TrayState::Ringing("bob".into()).words(), "bob is calling");
        assert_eq!(
            TrayState::Offline(Offline::Unreachable).words(),
            "Offline: the server cannot be reached"
        );
    }

    #[test]
    fn show_sends_a_state_once_and_never_blocks_without_a_bus() {
        let (states, rx) = mpsc::channel();
        let (_tx, actions) = mpsc::channel();
        let mut tray = Tray {
            states,
            actions,
            shown: None,
        };
        tray.show(TrayState::Online);
        tray.show(TrayState::Online);
        tray.show(TrayState::InCall("bob".into()));
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            [TrayState::Online, TrayState::InCall("bob".into())]
        );
        drop(rx);
        // The tray thread is gone: showing still returns at once.
        tray.show(TrayState::Connecting);
        assert_eq!(tray.poll(), None);
    }
}
