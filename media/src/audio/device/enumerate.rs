//! Listing the devices cpal sees and finding one by id or name.

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
    /// Human-readable name.
    pub name: String,
    /// The backend's id (for ALSA the PCM name: `default`, `pulse`, `hw:CARD=...`): stable,
    /// and what to store in settings. `device:NAME` accepts either this or `name`.
    pub id: String,
    /// The system default for this direction.
    pub is_default: bool,
    /// The configurations it supports (empty if it could not be queried).
    pub configs: Vec<SupportedConfig>,
}

/// Lists the input devices cpal sees on the default host.
pub fn input_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    list(Direction::Input)
}

/// Lists the output devices cpal sees on the default host.
pub fn output_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    list(Direction::Output)
}

fn host_error(direction: Direction, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device {
        name: format!("(all {} devices)", direction.name()),
        message: e.to_string(),
    }
}

fn device_id(device: &cpal::Device) -> String {
    device.id().map(|id| id.id().to_owned()).unwrap_or_default()
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| device_id(device))
}

fn devices(direction: Direction) -> Result<Vec<cpal::Device>, AudioError> {
    let host = cpal::default_host();
    let devices: Vec<cpal::Device> = match direction {
        Direction::Input => host
            .input_devices()
            .map_err(|e| host_error(direction, e))?
            .collect(),
        Direction::Output => host
            .output_devices()
            .map_err(|e| host_error(direction, e))?
            .collect(),
    };
    Ok(devices)
}

fn default_device(direction: Direction) -> Option<cpal::Device> {
    let host = cpal::default_host();
    match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    }
}

fn list(direction: Direction) -> Result<Vec<DeviceInfo>, AudioError> {
    let default_id = default_device(direction).map(|d| device_id(&d));
    let mut infos: Vec<DeviceInfo> = devices(direction)?
        .iter()
        .map(|device| {
            let id = device_id(device);
            let configs = supported_configs(device, direction)
                .unwrap_or_default()
                .into_iter()
                .map(|c| SupportedConfig {
                    channels: c.channels(),
                    min_rate: c.min_sample_rate(),
                    max_rate: c.max_sample_rate(),
                    sample_format: c.sample_format().to_string(),
                })
                .collect();
            DeviceInfo {
                name: device_name(device),
                is_default: default_id.as_deref() == Some(id.as_str()),
                id,
                configs,
            }
        })
        .collect();
    // The default first: it is what a picker should show selected.
    infos.sort_by_key(|d| !d.is_default);
    Ok(infos)
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

/// Finds a device by id (with or without the host prefix, as in `alsa:default`) or name
/// (exactly, then ignoring case); `None` is the system default.
pub(super) fn find_device(
    direction: Direction,
    name: Option<&str>,
) -> Result<(cpal::Device, String), AudioError> {
    let Some(wanted) = name else {
        let device = default_device(direction).ok_or(AudioError::NoDefaultDevice {
            direction: direction.name(),
        })?;
        let name = device_name(&device);
        return Ok((device, name));
    };
    let all = devices(direction)?;
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
        None => {
            let available = if all.is_empty() {
                "none".to_owned()
            } else {
                all.iter()
                    .map(|d| format!("{:?} ({})", device_id(d), device_name(d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Err(AudioError::NoSuchDevice {
                direction: direction.name(),
                name: wanted.to_owned(),
                available,
            })
        }
    }
}
