//! Listing the devices cpal sees and finding one by id or name.
//!
//! With a PulseAudio or PipeWire (pipewire-pulse) server the devices are its sinks and sources,
//! through cpal's `pulseaudio` host: each listed once, by the server's description ("Null
//! Output", "Headset") and its name as id (`vsink`, `vsink.monitor`). Without one, cpal's ALSA
//! host lists ALSA's PCMs (`default`, `pulse`, `hw:CARD=...` and its plugins), as before.
//!
//! The host is made once and kept ([`host`]): a PulseAudio host is a connection to the server,
//! and the device watcher lists twice a second. It is made again when the server stops answering,
//! and a server that appears after an ALSA host was chosen is tried again every few seconds.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cpal::HostId;
use cpal::traits::{DeviceTrait, HostTrait};

use super::Direction;
use crate::audio::AudioError;

/// One stream configuration range a device supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportedConfig {
    /// Channel count.
    pub channels: u16,
    /// Lowest sample rate, Hz.
    pub min_rate: u32,
    /// Highest sample rate, Hz.
    pub max_rate: u32,
    /// Sample format, as cpal names it (`f32`, `i16`...).
    pub sample_format: String,
}

/// A device cpal sees, for a device picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Human-readable name: PulseAudio's description (`Null Output`, `Monitor of Null Output`),
    /// ALSA's description without a sound server.
    pub name: String,
    /// The backend's id: PulseAudio's sink or source name (`vsink`, `vsink.monitor`), or ALSA's
    /// PCM name (`default`, `pulse`, `hw:CARD=...`). Stable, unique, and what to store in
    /// settings. `device:NAME` accepts either this or `name`.
    pub id: String,
    /// The system default for this direction.
    pub is_default: bool,
    /// The configurations it supports (empty if it could not be queried). A sound server
    /// converts to and from its device's own format: its devices list mono and stereo in each
    /// sample format it takes (cpal offers 1 to 31 channels).
    pub configs: Vec<SupportedConfig>,
}

/// Lists the input devices: the sound server's sources (the default first, monitors of
/// outputs last), or ALSA's capture PCMs without one.
pub fn input_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    list(Direction::Input, &[])
}

/// Lists the output devices: the sound server's sinks (the default first), or ALSA's
/// playback PCMs without one.
pub fn output_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    list(Direction::Output, &[])
}

/// How often a PulseAudio server that was not there (or did not answer) is tried again.
const PULSE_RETRY: Duration = Duration::from_secs(5);

/// The host in use and when a PulseAudio host was last tried.
struct HostCache {
    host: Option<Arc<cpal::Host>>,
    pulse_tried: Option<Instant>,
}

static HOST: Mutex<HostCache> = Mutex::new(HostCache {
    host: None,
    pulse_tried: None,
});

fn host_cache() -> MutexGuard<'static, HostCache> {
    HOST.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The host devices are listed and opened through: PulseAudio when a server answers (its
/// socket found as libpulse-less clients find it: `$PULSE_SERVER` (`unix:PATH`),
/// `$PULSE_RUNTIME_PATH`, `$XDG_RUNTIME_DIR/pulse/native`), ALSA otherwise.
pub(super) fn host() -> Arc<cpal::Host> {
    let mut cache = host_cache();
    let is_pulse = cache
        .host
        .as_ref()
        .is_some_and(|h| h.id() == HostId::PulseAudio);
    let retry_pulse = !is_pulse
        && cache
            .pulse_tried
            .is_none_or(|at| at.elapsed() >= PULSE_RETRY);
    if retry_pulse && cpal::available_hosts().contains(&HostId::PulseAudio) {
        cache.pulse_tried = Some(Instant::now());
        match cpal::host_from_id(HostId::PulseAudio) {
            Ok(host) => {
                tracing::debug!("audio devices through the PulseAudio server");
                cache.host = Some(Arc::new(host));
            }
            Err(e) => tracing::debug!("PulseAudio host: {e}; devices through ALSA"),
        }
    }
    if let Some(host) = &cache.host {
        return host.clone();
    }
    cache.pulse_tried.get_or_insert_with(Instant::now);
    // Not `default_host`, which would try the PulseAudio server that just failed once more.
    let host = Arc::new(cpal::host_from_id(HostId::Alsa).unwrap_or_else(|_| cpal::default_host()));
    tracing::debug!(host = %host.id(), "audio devices through the default host");
    cache.host = Some(host.clone());
    host
}

/// Drops `failed` as the host in use (its server stopped answering): the next [`host`] makes a
/// new one.
fn forget_host(failed: &Arc<cpal::Host>) {
    let mut cache = host_cache();
    if cache.host.as_ref().is_some_and(|h| Arc::ptr_eq(h, failed)) {
        cache.host = None;
        cache.pulse_tried = None;
    }
}

/// True when devices come from a sound server (cpal's PulseAudio host).
pub(super) fn is_sound_server(device: &cpal::Device) -> bool {
    device.id().is_ok_and(|id| id.host() == HostId::PulseAudio)
}

fn host_error(direction: Direction, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device {
        name: format!("(all {} devices)", direction.name()),
        message: e.to_string(),
    }
}

pub(super) fn device_id(device: &cpal::Device) -> String {
    device.id().map(|id| id.id().to_owned()).unwrap_or_default()
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| device_id(device))
}

/// PulseAudio names the source that records what a sink plays `SINK.monitor`.
fn is_monitor(device: &cpal::Device) -> bool {
    is_sound_server(device) && device_id(device).ends_with(".monitor")
}

fn devices_of(host: &cpal::Host, direction: Direction) -> Result<Vec<cpal::Device>, cpal::Error> {
    Ok(match direction {
        Direction::Input => host.input_devices()?.collect(),
        Direction::Output => host.output_devices()?.collect(),
    })
}

/// The devices in `direction` and the host they come from. A PulseAudio host whose server
/// stopped answering is replaced (by a new connection, or ALSA) and asked once more.
fn devices(direction: Direction) -> Result<(Vec<cpal::Device>, Arc<cpal::Host>), AudioError> {
    let host = host();
    match devices_of(&host, direction) {
        Ok(devices) => Ok((devices, host)),
        Err(e) if host.id() == HostId::PulseAudio => {
            tracing::debug!("PulseAudio listing failed ({e}); connecting again");
            forget_host(&host);
            let host = self::host();
            let devices = devices_of(&host, direction).map_err(|e| host_error(direction, e))?;
            Ok((devices, host))
        }
        Err(e) => Err(host_error(direction, e)),
    }
}

/// The ids of the devices in `direction`, without querying their configurations.
pub(super) fn device_ids(direction: Direction) -> Result<Vec<String>, AudioError> {
    Ok(devices(direction)?.0.iter().map(device_id).collect())
}

fn default_device(host: &cpal::Host, direction: Direction) -> Option<cpal::Device> {
    match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    }
}

/// Lists the devices in `direction`. The configurations of a device already in `known` (by id)
/// are taken from there rather than queried again: ALSA opens a device to query it, which is
/// slow and fails while the device is in use.
pub(super) fn list(
    direction: Direction,
    known: &[DeviceInfo],
) -> Result<Vec<DeviceInfo>, AudioError> {
    let (devices, host) = devices(direction)?;
    let default_id = default_device(&host, direction).map(|d| device_id(&d));
    let mut infos: Vec<(bool, DeviceInfo)> = devices
        .iter()
        .map(|device| {
            let id = device_id(device);
            let configs = match known.iter().find(|k| k.id == id && !k.configs.is_empty()) {
                Some(k) => k.configs.clone(),
                None => supported_configs(device, direction)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| !is_sound_server(device) || c.channels() <= 2)
                    .map(|c| SupportedConfig {
                        channels: c.channels(),
                        min_rate: c.min_sample_rate(),
                        max_rate: c.max_sample_rate(),
                        sample_format: c.sample_format().to_string(),
                    })
                    .collect(),
            };
            let info = DeviceInfo {
                name: device_name(device),
                is_default: default_id.as_deref() == Some(id.as_str()),
                id,
                configs,
            };
            (is_monitor(device), info)
        })
        .collect();
    // The default first (what a picker shows selected), monitors of outputs last (a
    // microphone that hears what is played is rarely what a person wants); stable otherwise.
    infos.sort_by_key(|(monitor, d)| (!d.is_default, *monitor));
    Ok(infos.into_iter().map(|(_, d)| d).collect())
}

pub(super) fn supported_configs(
    device: &cpal::Device,
    direction: Direction,
) -> Result<Vec<cpal::SupportedStreamConfigRange>, cpal::Error> {
    Ok(match direction {
        Direction::Input => device.supported_input_configs()?.collect(),
        Direction::Output => device.supported_output_configs()?.collect(),
    })
}

/// What a wrong name's error lists: each device as `"ID" (NAME)`. Without a sound server only
/// the ALSA PCMs that report a configuration (ALSA also lists plugins such as `lavrate` that
/// cannot be opened on their own), unless none does.
fn describe_available(all: &[cpal::Device], direction: Direction) -> String {
    let describe = |d: &cpal::Device| format!("{:?} ({})", device_id(d), device_name(d));
    let usable: Vec<String> = all
        .iter()
        .filter(|d| {
            is_sound_server(d)
                || supported_configs(d, direction).is_ok_and(|configs| !configs.is_empty())
        })
        .map(describe)
        .collect();
    let listed = if usable.is_empty() {
        all.iter().map(describe).collect()
    } else {
        usable
    };
    if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    }
}

/// The host to open a device through: for a sound server, a connection of the device's own.
/// cpal's PulseAudio host creates every playback stream with sync id 0, and PulseAudio ties a
/// connection's streams that share a sync id together (one sink, one format): a second
/// playback stream on the listing connection is refused with "Invalid argument", even on the
/// same sink. A server that no longer answers is forgotten and the next host is used.
fn opening_host() -> Arc<cpal::Host> {
    let listing = host();
    if listing.id() != HostId::PulseAudio {
        return listing;
    }
    match cpal::host_from_id(HostId::PulseAudio) {
        Ok(host) => Arc::new(host),
        Err(e) => {
            tracing::debug!("PulseAudio host: {e}; connecting again");
            forget_host(&listing);
            host()
        }
    }
}

/// Finds a device by id (with or without the host prefix, as in `pulseaudio:vsink` or
/// `alsa:default`) or name (exactly, then ignoring case); `None` is the system default.
pub(super) fn find_device(
    direction: Direction,
    name: Option<&str>,
) -> Result<(cpal::Device, String), AudioError> {
    let host = opening_host();
    let Some(wanted) = name else {
        let device = default_device(&host, direction).ok_or(AudioError::NoDefaultDevice {
            direction: direction.name(),
        })?;
        let name = device_name(&device);
        return Ok((device, name));
    };
    let all = devices_of(&host, direction).map_err(|e| host_error(direction, e))?;
    let full_id = |d: &cpal::Device| d.id().map(|id| id.to_string()).unwrap_or_default();
    let found = all
        .iter()
        .position(|d| device_id(d) == wanted || full_id(d) == wanted)
        .or_else(|| all.iter().position(|d| device_name(d) == wanted))
        .or_else(|| {
            all.iter().position(|d| {
                device_name(d).eq_ignore_ascii_case(wanted)
                    || device_id(d).eq_ignore_ascii_case(wanted)
            })
        });
    match found {
        Some(i) => {
            let device = all[i].clone();
            Ok((device, wanted.to_owned()))
        }
        None if host.id() == HostId::PulseAudio && names_alsa_pulse(wanted) => {
            let device = default_device(&host, direction).ok_or(AudioError::NoDefaultDevice {
                direction: direction.name(),
            })?;
            tracing::info!(
                "audio {} device {wanted:?} is ALSA's way to the sound server: using the \
                 server's default",
                direction.name()
            );
            let name = device_name(&device);
            Ok((device, name))
        }
        None => Err(AudioError::NoSuchDevice {
            direction: direction.name(),
            name: wanted.to_owned(),
            available: describe_available(&all, direction),
        }),
    }
}

/// True for the ALSA devices that lead to the sound server (`default`, `pulse`, "PulseAudio
/// Sound Server"...): settings saved while devices were listed through ALSA name them, and
/// they mean the server's default device.
fn names_alsa_pulse(wanted: &str) -> bool {
    ["default", "sysdefault", "pulse"].contains(&wanted) || wanted.contains("PulseAudio")
}
