//! The source and sink strings the headless commands take: `tone:HZ`, `wav:PATH`, `silence`,
//! `device[:NAME]` for sources; `wav:PATH`, `null`, `device[:NAME]` for sinks.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::AudioError;

const SOURCE_FORMS: &str = "expected tone:HZ, wav:PATH, silence, device or device:NAME";
const SINK_FORMS: &str = "expected wav:PATH, null, device or device:NAME";

/// Highest tone frequency accepted: below Nyquist at 48 kHz.
const MAX_TONE_HZ: f64 = 20_000.0;

/// Where audio comes from, as given on a command line or in settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// `tone:HZ`: a sine tone at HZ (a number, 1 to 20000), at half full scale.
    Tone {
        /// Frequency in hertz.
        hz: f64,
    },
    /// `wav:PATH`: a WAV file (any rate, channels, 8-32 bit integer or 32-bit float).
    Wav {
        /// The file.
        path: PathBuf,
    },
    /// `silence`.
    Silence,
    /// `device` (the default input) or `device:NAME`.
    Device {
        /// The device's name or id; `None` for the system default.
        name: Option<String>,
    },
}

/// Where audio goes, as given on a command line or in settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `wav:PATH`: a 48 kHz mono 16-bit WAV file, created or truncated.
    Wav {
        /// The file.
        path: PathBuf,
    },
    /// `null`: audio is dropped.
    Null,
    /// `device` (the default output) or `device:NAME`.
    Device {
        /// The device's name or id; `None` for the system default.
        name: Option<String>,
    },
}

fn bad(kind: &'static str, spec: &str, reason: impl Into<String>) -> AudioError {
    AudioError::BadSpec {
        kind,
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

fn device_name(
    kind: &'static str,
    spec: &str,
    rest: Option<&str>,
) -> Result<Option<String>, AudioError> {
    match rest {
        None => Ok(None),
        Some(name) if name.trim().is_empty() => Err(bad(
            kind,
            spec,
            "device name is empty (use `device` for the default device)",
        )),
        Some(name) => Ok(Some(name.to_owned())),
    }
}

/// The forms sources and sinks share.
enum Common {
    /// `wav:PATH`.
    Wav(PathBuf),
    /// `device` or `device:NAME`.
    Device(Option<String>),
}

/// `wav:PATH` or `device[:NAME]`; anything else is an error that lists `forms` (and, for what
/// looks like a WAV file's name, says how to write it).
fn parse_common(kind: &'static str, s: &str, forms: &str) -> Result<Common, AudioError> {
    match split(s) {
        ("wav", rest) => Ok(Common::Wav(wav_path(kind, s, rest)?)),
        ("device", rest) => Ok(Common::Device(device_name(kind, s, rest)?)),
        _ if s.to_ascii_lowercase().ends_with(".wav") => {
            Err(bad(kind, s, format!("{forms} (did you mean wav:{s}?)")))
        }
        _ => Err(bad(kind, s, forms)),
    }
}

/// `HEAD:REST` as `(HEAD, Some(REST))`, `HEAD` alone as `(HEAD, None)`.
fn split(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((head, rest)) => (head, Some(rest)),
        None => (s, None),
    }
}

/// `device` or `device:NAME`, as both kinds of spec print it.
fn fmt_device(f: &mut fmt::Formatter<'_>, name: Option<&str>) -> fmt::Result {
    match name {
        None => f.write_str("device"),
        Some(name) => write!(f, "device:{name}"),
    }
}

fn wav_path(kind: &'static str, spec: &str, rest: Option<&str>) -> Result<PathBuf, AudioError> {
    match rest {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(bad(kind, spec, "wav needs a path, as in wav:call.wav")),
    }
}

impl FromStr for SourceSpec {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match split(s) {
            ("tone", rest) => parse_tone(s, rest),
            ("silence", None) => Ok(SourceSpec::Silence),
            _ => Ok(match parse_common("source", s, SOURCE_FORMS)? {
                Common::Wav(path) => SourceSpec::Wav { path },
                Common::Device(name) => SourceSpec::Device { name },
            }),
        }
    }
}

/// `tone:HZ`.
fn parse_tone(s: &str, rest: Option<&str>) -> Result<SourceSpec, AudioError> {
    let Some(hz) = rest else {
        return Err(bad("source", s, "tone needs a frequency, as in tone:440"));
    };
    let hz: f64 = hz.trim().parse().map_err(|_| {
        bad(
            "source",
            s,
            format!("tone frequency {hz:?} is not a number"),
        )
    })?;
    if !hz.is_finite() || !(1.0..=MAX_TONE_HZ).contains(&hz) {
        return Err(bad(
            "source",
            s,
            format!("tone frequency must be between 1 and {MAX_TONE_HZ} Hz"),
        ));
    }
    Ok(SourceSpec::Tone { hz })
}

impl FromStr for SinkSpec {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "null" {
            return Ok(SinkSpec::Null);
        }
        Ok(match parse_common("sink", s, SINK_FORMS)? {
            Common::Wav(path) => SinkSpec::Wav { path },
            Common::Device(name) => SinkSpec::Device { name },
        })
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Tone { hz } => write!(f, "tone:{hz}"),
            SourceSpec::Wav { path } => write!(f, "wav:{}", path.display()),
            SourceSpec::Silence => f.write_str("silence"),
            SourceSpec::Device { name } => fmt_device(f, name.as_deref()),
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Wav { path } => write!(f, "wav:{}", path.display()),
            SinkSpec::Null => f.write_str("null"),
            SinkSpec::Device { name } => fmt_device(f, name.as_deref()),
        }
    }
}
