//! russh configuration for both sides of the bastion and the host key.
//!
//! Threat: downgrade to weak algorithms (SHA-1, CBC, NIST-curve or finite-field key exchange),
//! the Terrapin prefix-truncation attack, brute force and slow authentication that exhaust the
//! server. Mitigation: algorithm lists are set explicitly (curve25519 and the ML-KEM hybrid,
//! chacha20-poly1305 and AES-GCM, ETM SHA-2 MACs, no compression) with strict key exchange
//! advertised; attempts per connection are capped, rejections take a constant time, and the
//! handshake and authentication deadlines are enforced by the connection task.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::{MethodKind, MethodSet, Preferred, cipher, compression, kex, mac};

use crate::error::BastionError;

/// The client's banner and the key exchange must complete within this deadline after the
/// connection is accepted: an honest client needs well under a second; a stalled one gives
/// its pre-authentication slot back this soon.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Authentication must complete within this deadline after the connection is accepted (long
/// enough for a user told that their code was used to wait for the next one).
pub const AUTH_DEADLINE: Duration = Duration::from_secs(60);
/// Authentication requests accepted per connection.
pub const MAX_AUTH_ATTEMPTS: usize = 6;
/// Every rejection takes this long, whatever failed (no timing oracle, slows guessing).
pub const AUTH_REJECTION_TIME: Duration = Duration::from_millis(800);
/// Connections from one source (an IPv4 address, an IPv6 /64) that have not finished
/// authenticating, at once; more from that source are closed at accept (see
/// `gatehouse_core::preauth`). An engineer opens a few at a time; a small office behind
/// one NAT address fits.
pub const PREAUTH_PER_SOURCE: usize = 16;
/// Connections from all sources together that have not finished authenticating.
pub const PREAUTH_TOTAL: usize = 256;
/// Authenticated connections at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Channel window (flow control): 2 MiB so a long fat pipe is not throttled. It also bounds
/// how much a peer sends between two of its own window adjustments (see [`CHANNEL_BUFFER`]).
pub const WINDOW_SIZE: u32 = 2 * 1024 * 1024;
/// Largest packet payload (OpenSSH uses 32 KiB; 64 KiB is under a TCP segment train).
pub const MAX_PACKET: u32 = 65_535 - 1024;
/// Messages queued per channel before russh pauses the whole connection (backpressure).
///
/// Invariant: the queue must hold well over one window of packets (2 MiB / 32 KiB = 64).
/// russh re-opens a window on receipt and pauses the connection only when this queue is
/// full; a paused connection also stops reading the peer's window adjustments. When both
/// directions of a relayed channel are saturated (`cat` echoing bulk input), a queue of only
/// one window lets the two paused connections wait on each other. With four windows of room
/// the peer's adjustment is always read before the queue fills. Worst case memory per
/// channel and direction: 256 × 64 KiB.
pub const CHANNEL_BUFFER: usize = 256;
/// A connection with no traffic at all for this long is closed by russh.
pub const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Keepalive probes to detect dead peers.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

const KEX_SERVER: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];
const KEX_CLIENT: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_CLIENT,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
];
const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
];
const MACS: &[mac::Name] = &[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM];
const COMPRESSION: &[compression::Name] = &[compression::NONE];
/// The bastion's own host key type.
const SERVER_HOST_KEYS: &[Algorithm] = &[Algorithm::Ed25519];
/// Host key types accepted from targets (the pinned key decides which one is right).
const TARGET_HOST_KEYS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

fn preferred(kex: &'static [kex::Name], keys: &'static [Algorithm]) -> Preferred {
    Preferred {
        kex: Cow::Borrowed(kex),
        key: Cow::Borrowed(keys),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Borrowed(CIPHERS),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(COMPRESSION),
    }
}

/// The server side (staff clients).
pub fn server_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-Gatehouse")),
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::KeyboardInteractive][..]),
        auth_rejection_time: AUTH_REJECTION_TIME,
        // The client's first probe ("none") learns the methods only; no need to delay it.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        window_size: WINDOW_SIZE,
        maximum_packet_size: MAX_PACKET,
        channel_buffer_size: CHANNEL_BUFFER,
        event_buffer_size: CHANNEL_BUFFER,
        preferred: preferred(KEX_SERVER, SERVER_HOST_KEYS),
        max_auth_attempts: MAX_AUTH_ATTEMPTS,
        inactivity_timeout: Some(INACTIVITY_TIMEOUT),
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// The client side (targets).
pub fn client_config() -> russh::client::Config {
    russh::client::Config {
        client_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-Gatehouse")),
        window_size: WINDOW_SIZE,
        maximum_packet_size: MAX_PACKET,
        channel_buffer_size: CHANNEL_BUFFER,
        preferred: preferred(KEX_CLIENT, TARGET_HOST_KEYS),
        inactivity_timeout: Some(INACTIVITY_TIMEOUT),
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Loads the host key, or generates an ed25519 key there (mode 0600) when the file is missing.
pub fn load_or_generate_host_key(path: &Path) -> Result<PrivateKey, BastionError> {
    if path.exists() {
        return russh::keys::load_secret_key(path, None).map_err(|source| {
            BastionError::HostKeyLoad {
                path: path.to_path_buf(),
                source,
            }
        });
    }
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(BastionError::HostKeyEncode)?;
    let pem = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(BastionError::HostKeyEncode)?;
    let gen_err = |source| BastionError::HostKeyGenerate {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(gen_err)?;
    }
    write_private(path, pem.as_bytes()).map_err(gen_err)?;
    tracing::info!(path = %path.display(), "generated bastion host key (ed25519)");
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Shared russh configs.
pub struct Configs {
    pub server: Arc<russh::server::Config>,
    pub client: Arc<russh::client::Config>,
}
