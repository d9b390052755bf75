//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew) with secrets encrypted at
//! rest (AES-256-GCM, random 96-bit nonce, the user name as associated data so a ciphertext
//! moved to another user does not decrypt), and enrolment as `otpauth://` URI + QR code.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use totp_rs::{Builder, Totp};
use zeroize::Zeroizing;

use crate::error::IdentityError;
use crate::secret::{SecretKey, random_bytes};

/// Issuer shown in authenticator apps.
pub const ISSUER: &str = "Gatehouse";
/// TOTP secret length: 160 bits, as RFC 4226 recommends.
pub const SECRET_LEN: usize = 20;
/// Key-derivation label for the TOTP-at-rest key.
const KEY_LABEL: &str = "gatehouse/totp-at-rest/v1";
/// Seconds per TOTP step.
pub const STEP_SECS: u64 = 30;

/// Encrypts and decrypts TOTP secrets at rest with a key derived from the master secret.
pub struct TotpCipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for TotpCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpCipher(..)")
    }
}

impl TotpCipher {
    pub fn new(master: &SecretKey) -> Result<TotpCipher, IdentityError> {
        let raw = Zeroizing::new(master.derive(KEY_LABEL));
        let key = UnboundKey::new(&AES_256_GCM, raw.as_slice())
            .map_err(|_| IdentityError::TotpCrypto(String::new()))?;
        Ok(TotpCipher {
            key: LessSafeKey::new(key),
        })
    }

    /// `base64(nonce || ciphertext || tag)`.
    pub(crate) fn encrypt(&self, user: &str, secret: &[u8]) -> Result<String, IdentityError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut buf = secret.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(user.as_bytes()),
                &mut buf,
            )
            .map_err(|_| IdentityError::TotpCrypto(user.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub(crate) fn decrypt(
        &self,
        user: &str,
        stored: &str,
    ) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
        let err = || IdentityError::TotpCrypto(user.to_string());
        let raw = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|_| err())?;
        let (nonce, ct) = raw.split_at_checked(NONCE_LEN).ok_or_else(err)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(user.as_bytes()), &mut buf)
            .map_err(|_| err())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

/// Generates a new random TOTP secret.
pub(crate) fn new_secret() -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    let mut s = Zeroizing::new(vec![0u8; SECRET_LEN]);
    random_bytes(&mut s)?;
    Ok(s)
}

pub(crate) fn totp_for(user: &str, secret: &[u8]) -> Result<Totp, IdentityError> {
    Builder::new()
        .with_secret(secret)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_account_name(user)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|_| IdentityError::Totp)
}

/// Checks `code` at `unix_time`; returns the matched step (for replay protection).
/// Anything but exactly six ASCII digits is refused by totp-rs before any comparison; the
/// comparison itself is constant time.
pub(crate) fn check_code(
    user: &str,
    secret: &[u8],
    code: &str,
    unix_time: u64,
) -> Result<Option<u64>, IdentityError> {
    Ok(totp_for(user, secret)?.check(code.trim(), unix_time))
}

/// The current code (demo user, tests).
pub(crate) fn current_code(
    user: &str,
    secret: &[u8],
    unix_time: u64,
) -> Result<String, IdentityError> {
    Ok(totp_for(user, secret)?.generate(unix_time).to_string())
}

/// What a user needs to enrol an authenticator app. Holds the secret: show it once, never log.
#[derive(Clone)]
pub struct Enrolment {
    /// `otpauth://totp/Gatehouse:USER?secret=...&issuer=Gatehouse`
    pub otpauth_uri: String,
    /// Base32 secret for manual entry.
    pub secret_base32: String,
    /// The URI as a QR code, SVG document.
    pub qr_svg: String,
    /// The URI as a QR code drawn with Unicode half blocks for a terminal.
    pub qr_terminal: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(..)")
    }
}

pub(crate) fn enrolment(user: &str, secret: &[u8]) -> Result<Enrolment, IdentityError> {
    let totp = totp_for(user, secret)?;
    let uri = totp.to_url().map_err(|_| IdentityError::Totp)?;
    let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(|_| IdentityError::Qr)?;
    let qr_svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    let qr_terminal = qr
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build();
    Ok(Enrolment {
        secret_base32: totp.secret().to_base32(),
        otpauth_uri: uri,
        qr_svg,
        qr_terminal,
    })
}
