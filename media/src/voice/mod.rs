//! The voice pipeline: Opus in RTP, the jitter buffer, loss concealment, RTCP and statistics,
//! over any datagram transport.
