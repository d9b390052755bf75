//! Typed errors of gatehouse-core, one enum per failure domain, and the one formatter of an
//! error with its causes ([`error_chain`]) that every crate uses.

use std::path::PathBuf;

/// A configuration file that cannot be used. Every variant names the file; validation errors
/// also name the key path, the offending value (never a secret) and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {problem}; fix: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
        fix: String,
    },
}

/// The secret key material (TOTP encryption, audit MAC) cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("GATEHOUSE_SECRET_KEY is not base64 of exactly 32 bytes")]
    BadEnv,
    #[error("{path}: cannot read or create the secret key file")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: secret key file is readable by group or others; run `chmod 600` on it")]
    Permissions { path: PathBuf },
    #[error("{path}: secret key file does not hold exactly 32 bytes")]
    BadFile { path: PathBuf },
    #[error("the system random number generator failed")]
    Random,
    #[error("{path}: not an ed25519 private key (PKCS#8 PEM `PRIVATE KEY`)")]
    BadSigningKey { path: PathBuf },
    #[error("{path}: not an ed25519 public key (PEM `PUBLIC KEY`)")]
    BadPublicKey { path: PathBuf },
}

/// Local user administration failed (users file, validation, enrolment).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: cannot read users file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid users file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: cannot write users file")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid user name `{0}`: use 1-32 of a-z, 0-9, `.`, `_`, `-`, starting with a letter")]
    InvalidUserName(String),
    #[error(
        "invalid group name `{0}`: use 1-64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
    )]
    InvalidGroup(String),
    #[error("user `{0}` already exists")]
    UserExists(String),
    #[error("no such user `{0}`")]
    NoSuchUser(String),
    #[error("password refused: {0}")]
    WeakPassword(String),
    #[error("invalid ssh public key: {0}")]
    InvalidSshKey(String),
    #[error("cannot hash password")]
    Hash,
    #[error("cannot encrypt or decrypt the totp secret of `{0}` (wrong secret key?)")]
    TotpCrypto(String),
    #[error("cannot build totp enrolment")]
    Totp,
    #[error("cannot render qr code")]
    Qr,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why an authentication attempt failed. Callers show users only a generic message; the
/// variant goes to the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid totp code")]
    InvalidTotp,
    #[error("totp code already used")]
    TotpReplayed,
    #[error("account is locked by an administrator")]
    AccountLocked,
    /// Too many failures: no guess is taken from this user and address for `remaining_secs`
    /// (a delay that grows with each failure, or, when `locked`, a lockout).
    #[error("too many failures ({}): retry in {remaining_secs} s", scope.describe())]
    LockedOut {
        remaining_secs: u64,
        scope: crate::store::Scope,
        locked: bool,
    },
    #[error("session unknown, expired or idle")]
    NoSession,
    /// A live session presented on another host than the one it was issued to (a cookie
    /// carried to another app host): refused like no session, and worth an audit record.
    #[error("session of `{user}` presented on a host it was not issued to")]
    WrongHost {
        user: String,
        /// The session's id hash.
        session: String,
        /// The host it was issued to (`None`: not a web session).
        issued_for: Option<String>,
    },
    #[error("identity backend unavailable")]
    Identity(#[source] IdentityError),
    #[error("session store unavailable")]
    Store(#[source] StoreError),
    #[error("audit log unavailable")]
    Audit(#[source] AuditError),
}

/// A store operation failed or timed out; callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store operation `{op}` timed out")]
    Timeout { op: &'static str },
    #[error("store operation `{op}` failed")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot connect to the store")]
    Connect(#[source] redis::RedisError),
    #[error("corrupt record in the store at `{key}`")]
    Corrupt { key: String },
    #[error("store operation `{op}` refused: value too large")]
    TooLarge { op: &'static str },
    #[error("the system random number generator failed")]
    Random,
    #[error(
        "the store's data was written with another secret key (its `{key}` record does not match this instance's key): every instance sharing a store must use the same secret key; delete `{key}` only to discard the store's data"
    )]
    KeyMismatch { key: &'static str },
    #[error("the store's invalidation link is down: sessions are refused until it is back")]
    Unsynced,
}

/// A policy or model file that cannot be used; the running policy stays.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read policy file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("{path}: casbin refused the model or policy")]
    Casbin {
        path: PathBuf,
        #[source]
        source: casbin::Error,
    },
    #[error(
        "{path}: the casbin model does not decide like gatehouse's index ({probe}); use the shipped policies/model.conf"
    )]
    ModelMismatch { path: PathBuf, probe: String },
    #[error("{path}: loading the policy was interrupted")]
    Interrupted { path: PathBuf },
}

/// A just-in-time grant that cannot be made, found or revoked.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("invalid user `{0}`: a user name (a-z 0-9 . _ - + @, at most 128)")]
    InvalidUser(String),
    #[error("invalid grant object `{object}`: {problem}")]
    InvalidObject {
        object: String,
        problem: &'static str,
    },
    #[error(
        "invalid action `{0}`: `*` or names like GET|HEAD or ssh|sftp (letters, digits, `-`, `_`)"
    )]
    InvalidAction(String),
    #[error("a group grant takes no --action: the group's own policy lines say what it may do")]
    ActionOnGroup,
    #[error("a grant needs a reason: say why (--reason TEXT, not empty)")]
    EmptyReason,
    #[error("the reason is too long ({len} characters, at most {max})")]
    ReasonTooLong { len: usize, max: usize },
    #[error("the reason holds control characters; write it on one line of plain text")]
    ReasonControl,
    #[error("a grant needs a positive duration (--for 4h)")]
    ZeroDuration,
    #[error(
        "a grant of {asked} is longer than the allowed maximum of {max} (`[grants] max_duration`); ask for at most {max}"
    )]
    TooLong { asked: String, max: String },
    #[error("no live grant `{0}` (unknown, expired or already revoked)")]
    NotFound(String),
    #[error("grant store unavailable")]
    Store(#[source] StoreError),
    #[error("audit log unavailable")]
    Audit(#[source] AuditError),
    #[error("the running server's grants did not refresh in time")]
    Refresh,
}

/// A session recording cannot be written or read. Writing errors end (or refuse) the session
/// being recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: cannot create recording")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write recording")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a recording event")]
    Encode(#[source] serde_json::Error),
    #[error("the recording writer stopped")]
    Closed,
    #[error("invalid recording id: expected 32 lowercase hex digits")]
    InvalidId,
    #[error("the system random number generator failed")]
    Random,
    #[error("{path}: cannot open recording")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read recording")]
    ReadCast(#[source] std::io::Error),
    #[error("recording line {line}: {problem}")]
    Malformed { line: usize, problem: String },
    #[error("no recording with id {0}")]
    NotFound(String),
    #[error("recording {0} is encrypted and no secret key was given")]
    NoKey(String),
    #[error("{path}: cannot read recording metadata")]
    Sidecar {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot create the recordings directory")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recordings index: {what}")]
    Index {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("recordings index: {0}")]
    IndexState(String),
}

/// The audit log cannot be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: cannot write audit log")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit writer is stopped")]
    Closed,
    #[error("audit writer did not confirm the record in time")]
    Busy,
    #[error("cannot encode audit record")]
    Encode(#[source] serde_json::Error),
    #[error("{path}:{line}: {problem}")]
    Tampered {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    /// The log does not verify, and the problem is not one line's: a missing segment, a cut
    /// tail, a checkpoint or export manifest that does not match.
    #[error("{path}: {problem}")]
    Broken { path: PathBuf, problem: String },
    /// The log is shorter than (or differs from) the signed head this server last confirmed:
    /// records were removed from its end. The server refuses to chain onto it.
    #[error("{path}: {problem}")]
    CutTail { path: PathBuf, problem: String },
    #[error("audit signing key unavailable")]
    Key(#[source] KeyError),
    #[error("invalid audit query: {0}")]
    Query(String),
}

/// An error and its sources on one line, `error: cause: cause's cause`, for logs, audit
/// records, `/readyz` and the command line. Each layer's message says only its own part
/// (the cause is in `#[source]`), so nothing is printed twice.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn chain_lists_every_cause_once() {
        let e = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(error_chain(&e), "outer: middle: inner");
        assert_eq!(error_chain(&std::io::Error::other("alone")), "alone");
    }
}

/// An outbound call (alert webhook, SSO discovery, key set, token or userinfo endpoint)
/// failed. URLs in messages are redacted to scheme, host and port (a path or query may hold
/// a code or a token).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("refused to call `{0}`: not https (plain http only to a loopback host, where allowed)")]
    Scheme(String),
    #[error("invalid request")]
    Request(#[source] http::Error),
    #[error("the call to `{url}` did not finish within {after:?}")]
    Timeout {
        url: String,
        after: std::time::Duration,
    },
    #[error("the call to `{url}` failed")]
    Call {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the response of `{url}` failed or it is larger than {limit} bytes")]
    Body {
        url: String,
        limit: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: cannot read the CA file")]
    CaFile {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: no usable CA certificate in the file")]
    CaCert {
        path: PathBuf,
        #[source]
        source: Option<rustls::Error>,
    },
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
}

/// A provider's discovery document or key set could not be had: the provider is unavailable
/// (its login button says so) and local logins are unaffected.
#[derive(Debug, thiserror::Error)]
pub enum ProviderFetchError {
    #[error("discovery document could not be fetched or is invalid")]
    Discovery(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("key set could not be fetched or is invalid")]
    Jwks(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the provider advertises no asymmetric ID-token signing algorithm")]
    NoAlgorithm,
    #[error("the last attempt failed {secs} s ago; next attempt in {retry_secs} s")]
    BackingOff { secs: u64, retry_secs: u64 },
}

/// Which check refused an SSO login. Its name goes to the log and to the audit record
/// (`sso_failure.check`), never to the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoCheck {
    /// `state` missing, unknown, expired or already used (tampered, replayed, or no login
    /// transaction at all: login CSRF).
    State,
    /// The callback came from another browser than the one that started the login.
    Binding,
    /// The provider answered the authorization request with an error (consent denied, ...).
    ProviderError,
    /// The callback carries neither a code nor an error.
    Code,
    /// The provider could not be reached at its token or userinfo endpoint.
    Unreachable,
    /// The token endpoint refused the code (replayed or expired code, wrong client secret).
    TokenExchange,
    /// The token response has no ID token.
    IdTokenMissing,
    /// The token response or ID token is not well formed.
    Malformed,
    /// `alg` is `none`, symmetric (HS*), or not one the provider advertises.
    Alg,
    /// No key with the token's `kid`, also after refetching the key set.
    Kid,
    /// Several keys match the token's header.
    AmbiguousKey,
    /// The signature does not verify.
    Signature,
    /// `iss` (or the callback's `iss` parameter) is not the provider's issuer.
    Iss,
    /// `aud` does not contain the client id.
    Aud,
    /// Several audiences and `azp` is not the client id (or `azp` names another client).
    Azp,
    /// `exp` has passed.
    Exp,
    /// `iat` is in the future (beyond the allowed skew) or too far in the past.
    Iat,
    /// `nonce` is missing or not the login transaction's.
    Nonce,
    /// The token's header uses something unsupported (JWE, `crit`, nested token, `typ`).
    Unsupported,
    /// The userinfo response failed or names another subject.
    Userinfo,
    /// The name claim is missing or not a valid user name.
    Name,
    /// `username_claim = "email"` and `email_verified` is not `true`.
    EmailVerified,
    /// The groups claim is not a string or an array of valid group names, or has too many.
    Groups,
    /// The name is already a local user's or another SSO user's.
    NameTaken,
    /// The SSO user is locked by an administrator.
    Locked,
}

impl SsoCheck {
    /// The name in logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoCheck::State => "state",
            SsoCheck::Binding => "binding",
            SsoCheck::ProviderError => "provider_error",
            SsoCheck::Code => "code",
            SsoCheck::Unreachable => "unreachable",
            SsoCheck::TokenExchange => "token_exchange",
            SsoCheck::IdTokenMissing => "id_token_missing",
            SsoCheck::Malformed => "malformed",
            SsoCheck::Alg => "alg",
            SsoCheck::Kid => "kid",
            SsoCheck::AmbiguousKey => "ambiguous_key",
            SsoCheck::Signature => "signature",
            SsoCheck::Iss => "iss",
            SsoCheck::Aud => "aud",
            SsoCheck::Azp => "azp",
            SsoCheck::Exp => "exp",
            SsoCheck::Iat => "iat",
            SsoCheck::Nonce => "nonce",
            SsoCheck::Unsupported => "unsupported",
            SsoCheck::Userinfo => "userinfo",
            SsoCheck::Name => "name",
            SsoCheck::EmailVerified => "email_verified",
            SsoCheck::Groups => "groups",
            SsoCheck::NameTaken => "name_taken",
            SsoCheck::Locked => "locked",
        }
    }
}

impl std::fmt::Display for SsoCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SSO login step failed. Pages show a generic message by [`SsoError::page`]; the check
/// and reason go to the log and the audit record (already written when this is returned).
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("no sso provider named `{0}`")]
    UnknownProvider(String),
    #[error("sso provider `{provider}` is unavailable")]
    Unavailable {
        provider: String,
        #[source]
        source: ProviderFetchError,
    },
    #[error("cannot set up the client of sso provider `{provider}`")]
    Setup {
        provider: String,
        #[source]
        source: OutboundError,
    },
    #[error("gateway.public_url cannot carry the sso callback path")]
    Callback,
    #[error("no browser binding for the sso login (no login-transaction cookie)")]
    Binding,
    #[error("sso login refused by check `{check}`: {reason}")]
    Refused {
        provider: Option<String>,
        check: SsoCheck,
        reason: String,
    },
    #[error("session store unavailable")]
    Store(#[source] StoreError),
    #[error("audit log unavailable")]
    Audit(#[source] AuditError),
    #[error("sso user registry unavailable")]
    Registry(#[source] IdentityError),
    #[error("the system random number generator failed")]
    Random,
}

/// What a page may say about an [`SsoError`]: one of a few fixed messages, never the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoPage {
    /// The provider cannot be reached: try again later or sign in locally.
    ProviderUnavailable,
    /// The user (or the provider) declined: start again.
    Declined,
    /// This sign-in link is expired, used, or from another browser: start again.
    StartAgain,
    /// The name is taken by another account: ask an administrator.
    NameTaken,
    /// The account is locked.
    Locked,
    /// Anything else: sign-in failed (the request id leads to the log).
    Failed,
    /// Gatehouse itself cannot proceed (store, audit, registry).
    Internal,
}

impl SsoError {
    /// The check that refused the login, when one did.
    pub fn check(&self) -> Option<SsoCheck> {
        match self {
            SsoError::Refused { check, .. } => Some(*check),
            _ => None,
        }
    }

    /// Which fixed message a page shows for this error.
    pub fn page(&self) -> SsoPage {
        match self {
            SsoError::UnknownProvider(_) => SsoPage::Failed,
            SsoError::Binding => SsoPage::StartAgain,
            SsoError::Setup { .. } | SsoError::Callback => SsoPage::Internal,
            SsoError::Unavailable { .. } => SsoPage::ProviderUnavailable,
            SsoError::Refused { check, .. } => match check {
                SsoCheck::Unreachable => SsoPage::ProviderUnavailable,
                SsoCheck::ProviderError => SsoPage::Declined,
                SsoCheck::State | SsoCheck::Binding | SsoCheck::Code => SsoPage::StartAgain,
                SsoCheck::NameTaken => SsoPage::NameTaken,
                SsoCheck::Locked => SsoPage::Locked,
                _ => SsoPage::Failed,
            },
            SsoError::Store(_) | SsoError::Audit(_) | SsoError::Registry(_) | SsoError::Random => {
                SsoPage::Internal
            }
        }
    }
}
