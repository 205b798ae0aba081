//! Batched UDP receive and send (`recvmmsg`/`sendmmsg`) for the server's hot path.
