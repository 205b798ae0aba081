//! Audio in and out: devices (cpal), WAV files, tones, silence, and resampling to and from the
//! pipeline's 48 kHz mono.
