//! Hot-plug: the device lists kept up to date in the background, and streams whose device
//! disappears.
//!
//! - [`DeviceWatcher`] lists the input and output devices on a thread of its own every
//!   `interval` and publishes them as [`DeviceLists`]; [`DeviceWatcher::snapshot`] only copies
//!   what was published (a lock held for an `Arc` clone), so a UI can call it every frame. A
//!   device added or removed shows within one interval plus a listing (a few milliseconds with a
//!   sound server).
//! - [`watch_presence`]: a sound server moves a stream whose device is removed to another device
//!   and carries on without telling the client (cpal's PulseAudio host reports nothing). Every
//!   stream opened on a sound server's device is therefore watched: when its device leaves the
//!   server's list the stream is failed with "the device was removed", which the media thread
//!   sees as [`AudioEvent::DeviceFailed`](crate::audio::AudioEvent::DeviceFailed) and the engine
//!   answers by opening the default device.
//!
//! Polling rather than PulseAudio's subscription: cpal's host gives no access to its connection,
//! and listing a server's sinks and sources is two small requests.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::Direction;
use super::enumerate::{DeviceInfo, device_ids, list};
use super::stream::{REMOVED, Shared};

/// How often streams on a sound server's devices are checked for their device.
const PRESENCE_INTERVAL: Duration = Duration::from_millis(500);

/// The devices at one moment, as [`DeviceWatcher::snapshot`] gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLists {
    /// Input devices, as [`input_devices`](super::input_devices) lists them (the default
    /// first, monitors of outputs last); empty if listing failed.
    pub inputs: Vec<DeviceInfo>,
    /// Output devices, as [`output_devices`](super::output_devices) lists them.
    pub outputs: Vec<DeviceInfo>,
    /// 0 until the first listing is done, then one more each time either list changes
    /// (a device added, removed or renamed, or another default): compare it to redraw a
    /// picker only when something changed.
    pub generation: u64,
}

/// Lists the devices in the background and publishes them; stops when dropped.
#[derive(Debug)]
pub struct DeviceWatcher {
    published: Arc<Mutex<Arc<DeviceLists>>>,
    /// Dropped with the watcher: its thread's wait ends and it returns.
    _stop: mpsc::Sender<()>,
}

impl DeviceWatcher {
    /// Starts listing every `interval` (500 ms to 1 s keeps hot-plug under 2 s). The first
    /// listing runs at once on the watcher's thread; until it is done the lists are empty with
    /// generation 0.
    pub fn spawn(interval: Duration) -> DeviceWatcher {
        let published = Arc::new(Mutex::new(Arc::new(DeviceLists::default())));
        let (stop, stopped) = mpsc::channel();
        let shared = published.clone();
        let spawned = std::thread::Builder::new()
            .name("pinhole-devices".into())
            .spawn(move || watch(&shared, interval, &stopped));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the device watcher: {e}; device lists stay empty");
        }
        DeviceWatcher {
            published,
            _stop: stop,
        }
    }

    /// The latest lists. Never waits for a listing.
    pub fn snapshot(&self) -> DeviceLists {
        DeviceLists::clone(&lock(&self.published))
    }

    /// The generation of the latest lists, without copying them.
    pub fn generation(&self) -> u64 {
        lock(&self.published).generation
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The watcher's thread: lists, publishes what changed, waits `interval` or until the watcher
/// is dropped.
fn watch(published: &Mutex<Arc<DeviceLists>>, interval: Duration, stopped: &mpsc::Receiver<()>) {
    let mut current = DeviceLists::default();
    loop {
        let inputs = listed(Direction::Input, &current.inputs);
        let outputs = listed(Direction::Output, &current.outputs);
        if current.generation == 0 || inputs != current.inputs || outputs != current.outputs {
            current = DeviceLists {
                inputs,
                outputs,
                generation: current.generation + 1,
            };
            tracing::debug!(
                generation = current.generation,
                inputs = current.inputs.len(),
                outputs = current.outputs.len(),
                "audio devices changed"
            );
            *lock(published) = Arc::new(current.clone());
        }
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The devices in `direction` (configurations of those already known are reused), or none if
/// they cannot be listed.
fn listed(direction: Direction, known: &[DeviceInfo]) -> Vec<DeviceInfo> {
    list(direction, known).unwrap_or_else(|e| {
        tracing::debug!("cannot list {} devices: {e}", direction.name());
        Vec::new()
    })
}

/// A stream on a sound server's device.
struct Watched {
    direction: Direction,
    id: String,
    shared: Weak<Shared>,
}

/// The streams watched, and whether the thread that checks them runs.
struct Presence {
    watched: Vec<Watched>,
    running: bool,
}

static PRESENCE: Mutex<Presence> = Mutex::new(Presence {
    watched: Vec::new(),
    running: false,
});

/// Fails the stream counting in `shared` (with [`REMOVED`]) once the device `id` is no longer
/// listed in `direction`. The check runs every [`PRESENCE_INTERVAL`] on a thread that lives
/// while some stream is watched; a stream is forgotten when it is dropped or has failed.
pub(super) fn watch_presence(direction: Direction, id: String, shared: &Arc<Shared>) {
    let mut presence = lock(&PRESENCE);
    let weak = Arc::downgrade(shared);
    if presence.watched.iter().any(|w| w.shared.ptr_eq(&weak)) {
        return;
    }
    presence.watched.push(Watched {
        direction,
        id,
        shared: weak,
    });
    if presence.running {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("pinhole-device-presence".into())
        .spawn(check_presence);
    match spawned {
        Ok(_) => presence.running = true,
        Err(e) => tracing::warn!("cannot watch audio devices for removal: {e}"),
    }
}

/// The presence thread: returns when no stream is left to watch.
fn check_presence() {
    loop {
        std::thread::sleep(PRESENCE_INTERVAL);
        let streams: Vec<(Direction, String, Arc<Shared>)> = {
            let mut presence = lock(&PRESENCE);
            presence.watched.retain(|w| {
                w.shared
                    .upgrade()
                    .is_some_and(|s| !s.failed.load(std::sync::atomic::Ordering::Acquire))
            });
            if presence.watched.is_empty() {
                presence.running = false;
                return;
            }
            presence
                .watched
                .iter()
                .filter_map(|w| Some((w.direction, w.id.clone(), w.shared.upgrade()?)))
                .collect()
        };
        for direction in [Direction::Input, Direction::Output] {
            if !streams.iter().any(|(d, _, _)| *d == direction) {
                continue;
            }
            // A listing that fails says nothing about one device: the stream reports a server
            // that went away by itself.
            let Ok(ids) = device_ids(direction) else {
                continue;
            };
            for (_, id, shared) in streams.iter().filter(|(d, _, _)| *d == direction) {
                if !ids.contains(id) {
                    tracing::info!(device = %id, "audio {} device removed", direction.name());
                    shared.fail(REMOVED);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_watcher_publishes_without_waiting_and_stops_when_dropped() {
        let watcher = DeviceWatcher::spawn(Duration::from_millis(50));
        // A snapshot never waits for a listing (which may take seconds without a server).
        let start = Instant::now();
        let first = watcher.snapshot();
        assert!(start.elapsed() < Duration::from_millis(100));
        assert!(first.generation <= 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while watcher.generation() == 0 {
            assert!(Instant::now() < deadline, "no listing within 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nothing changes here in a few intervals: the generation stays.
        let listed = watcher.snapshot();
        std::thread::sleep(Duration::from_millis(200));
        let later = watcher.snapshot();
        if later.inputs == listed.inputs && later.outputs == listed.outputs {
            assert_eq!(later.generation, listed.generation);
        }

        let published = Arc::downgrade(&watcher.published);
        drop(watcher);
        let deadline = Instant::now() + Duration::from_secs(30);
        while published.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the watcher's thread still runs");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
