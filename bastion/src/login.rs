//! Authentication, run by the connection task on the handler's events: a registered key
//! (verified signature), then a TOTP code where the target requires one, through core's SSH
//! login flow (`check_ssh_key` → `verify_totp_after_key` / `accept_key_only`). The result is
//! core's [`VerifiedIdentity`](gatehouse_core::identity::VerifiedIdentity), kept in the
//! connection until it ends.
//!
//! Threat: authentication confusion (a key probe counted as proof, partial success carried to
//! another user name or target, a code checked for a user whose key was never verified),
//! guessing, and logins that leave no trace. Mitigation: only a signed key yields core's
//! `KeyAccepted`, which the code step consumes by reference; the partial state is bound to
//! the exact SSH user name it was earned under and any change starts over; the login
//! throttle, the replay cache and failure counts are core's (shared with the web login);
//! every step is audited with the client address and session id (a throttled or locked-out
//! refusal says which counter and how long), and a failed audit, store or identity call ends
//! the connection (fail closed). Honest clients are told what to do in the prompt itself
//! (OpenSSH shows it, also through `SSH_ASKPASS`): a replayed code is answered with a new
//! prompt "code already used, wait for the next one" (no guess, nothing counted), and a
//! prompt during a throttling delay says how long to wait.

use std::borrow::Cow;
use std::sync::Arc;

use gatehouse_core::AuthError;
use gatehouse_core::audit::{AuditEvent, SshAuthStep, SshRefusal, new_incident_id};
use gatehouse_core::identity::{KeyAccepted, VerifiedIdentity};
use gatehouse_core::preauth::Slot;
use russh::keys::{Algorithm, PublicKey};
use russh::server::Auth;
use russh::{MethodKind, MethodSet};

use crate::auth::{Selection, parse_user_name, requires_totp, resolve};
use crate::conn::{Authenticated, Conn};
use crate::event::TotpResponse;
use crate::handler::key_only;
use crate::registry::SessionInfo;

/// Longest TOTP code accepted (digits only).
const MAX_CODE: usize = 10;
/// Answers to the code prompt taken on one connection (replays are answered with a new
/// prompt, not a rejection: this bounds that loop); then the login starts over.
const MAX_CODE_ANSWERS: u32 = 10;
/// The prompt's text.
const PROMPT: &str = "TOTP code: ";
/// The prompt after a replayed code: it was right but is used up (by another connection in
/// the same 30 s step, typically), and the next one will do.
pub(crate) const PROMPT_REPLAYED: &str = "Code already used, wait for the next one. TOTP code: ";

struct Pending {
    /// The exact SSH user name the key was verified under.
    name: String,
    selection: Selection,
    key: KeyAccepted,
}

pub(crate) struct Login {
    conn: Arc<Conn>,
    pending: Option<Pending>,
    /// A pre-authentication slot, given back once authenticated.
    unauth: Option<Slot>,
    /// Answers to the code prompt so far.
    answers: u32,
}

fn totp_next(partial: bool) -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::KeyboardInteractive][..])),
        partial_success: partial,
    }
}

fn prompt(text: Cow<'static, str>) -> Auth {
    Auth::Partial {
        name: Cow::Borrowed("Gatehouse"),
        instructions: Cow::Borrowed("Second factor for the bastion."),
        prompts: Cow::Owned(vec![(text, false)]),
    }
}

/// The audit step and detail of a throttling refusal.
fn throttled(e: &AuthError) -> Option<(SshAuthStep, String)> {
    let AuthError::LockedOut {
        remaining_secs,
        scope,
        locked,
    } = e
    else {
        return None;
    };
    Some(if *locked {
        (
            SshAuthStep::LockedOut,
            format!("locked out: {}, {remaining_secs} s left", scope.describe()),
        )
    } else {
        (
            SshAuthStep::Throttled,
            format!("slowed: {}, retry in {remaining_secs} s", scope.describe()),
        )
    })
}

fn well_formed(r: &TotpResponse) -> bool {
    !r.extra
        && !r.first.is_empty()
        && r.first.len() <= MAX_CODE
        && r.first.bytes().all(|b| b.is_ascii_digit())
}

impl Login {
    pub fn new(conn: Arc<Conn>, unauth: Slot) -> Login {
        Login {
            conn,
            pending: None,
            unauth: Some(unauth),
            answers: 0,
        }
    }

    /// Records one step; `false` when it could not be recorded (the connection is ending).
    async fn step(&self, sel: &Selection, step: SshAuthStep) -> bool {
        self.step_with(sel, step, None).await
    }

    /// [`Login::step`] with what the step found.
    async fn step_with(&self, sel: &Selection, step: SshAuthStep, detail: Option<String>) -> bool {
        let incident_id = (step == SshAuthStep::LockedOut).then(new_incident_id);
        let event = AuditEvent::SshAuth {
            user: sel.user.clone(),
            target: sel.target.clone(),
            step,
            incident_id,
            detail,
            context: self.conn.context(),
        };
        match self.conn.audit(event).await {
            Ok(()) => true,
            Err(e) => {
                self.fail("audit", &e);
                false
            }
        }
    }

    /// A service the login needs failed: end the connection (fail closed).
    fn fail(&self, what: &str, e: &dyn std::error::Error) {
        tracing::error!(error = %gatehouse_core::error_chain(e), "{what} unavailable during ssh authentication; closing");
        self.conn.ending.end("authentication unavailable");
    }

    /// Answers a core refusal of a login step: audited; the connection ends when the
    /// refusal is a failure of a service rather than of the user.
    async fn refused(&mut self, sel: &Selection, e: AuthError) -> Auth {
        let (step, detail) = match &e {
            AuthError::InvalidCredentials => (SshAuthStep::KeyRefused, None),
            AuthError::InvalidTotp => (SshAuthStep::TotpFailed, None),
            AuthError::TotpReplayed => (SshAuthStep::TotpReplayed, None),
            AuthError::LockedOut { .. } => match throttled(&e) {
                Some((step, detail)) => (step, Some(detail)),
                None => (SshAuthStep::LockedOut, None),
            },
            AuthError::AccountLocked => (SshAuthStep::AccountLocked, None),
            _ => {
                self.fail("identity", &e);
                return Auth::reject();
            }
        };
        if !self.step_with(sel, step, detail).await {
            return Auth::reject();
        }
        match step {
            // Right but used up: no guess; ask again, saying so (no rejection delay either).
            SshAuthStep::TotpReplayed if self.pending.is_some() => {
                prompt(Cow::Borrowed(PROMPT_REPLAYED))
            }
            // The key stays verified: another code may follow on this connection (the next
            // prompt says how long to wait when throttled).
            SshAuthStep::TotpFailed | SshAuthStep::Throttled if self.pending.is_some() => {
                totp_next(false)
            }
            _ => {
                self.pending = None;
                key_only()
            }
        }
    }

    /// The code prompt: saying how long to wait first while the user is throttled here.
    async fn ask_code(&mut self, sel: &Selection) -> Auth {
        let authenticator = &self.conn.shared.services.authenticator;
        let wait = authenticator
            .throttle_wait(&sel.user, Some(self.conn.client.ip()))
            .await;
        match wait {
            Ok(None) => prompt(Cow::Borrowed(PROMPT)),
            Ok(Some(w)) => {
                let secs = w.as_secs() + u64::from(w.subsec_nanos() > 0);
                prompt(Cow::Owned(format!(
                    "Too many failed attempts: wait {secs} s before the next code. {PROMPT}"
                )))
            }
            Err(e) => self.refused(sel, e).await,
        }
    }

    /// A public key, offered or signed, for the SSH user name `name`.
    pub async fn key(
        &mut self,
        name: &str,
        key: &PublicKey,
        alg: &Algorithm,
        signed: bool,
    ) -> Auth {
        if signed || self.pending.as_ref().is_some_and(|p| p.name != name) {
            self.pending = None;
        }
        let Some(sel) = parse_user_name(name) else {
            return key_only();
        };
        // ssh-rsa signs with SHA-1: refused whatever the key.
        if matches!(alg, Algorithm::Rsa { hash: None }) {
            return key_only();
        }
        let Ok(line) = key.to_openssh() else {
            return key_only();
        };
        let authenticator = &self.conn.shared.services.authenticator;
        let accepted = match authenticator
            .check_ssh_key(&sel.user, &line, Some(self.conn.client.ip()))
            .await
        {
            Ok(a) => a,
            Err(e) => return self.refused(&sel, e).await,
        };
        if !signed {
            // Only "this key may sign": nothing is authenticated until the signature arrives.
            return Auth::Accept;
        }
        if !self.step(&sel, SshAuthStep::KeyAccepted).await {
            return Auth::reject();
        }
        if requires_totp(&sel, &self.conn.shared.target_configs) {
            self.pending = Some(Pending {
                name: name.to_string(),
                selection: sel,
                key: accepted,
            });
            return totp_next(true);
        }
        match authenticator.accept_key_only(accepted).await {
            Ok(identity) => self.finish(identity, sel).await,
            Err(e) => self.refused(&sel, e).await,
        }
    }

    /// A keyboard-interactive step for `name`: the prompt, or a code to check.
    pub async fn totp(&mut self, name: &str, response: Option<TotpResponse>) -> Auth {
        let Some(pending) = self.pending.as_ref().filter(|p| p.name == name) else {
            // No verified key under this exact name: start over with the key.
            self.pending = None;
            return key_only();
        };
        let sel = pending.selection.clone();
        let Some(response) = response else {
            return self.ask_code(&sel).await;
        };
        self.answers += 1;
        if self.answers > MAX_CODE_ANSWERS {
            self.pending = None;
            return key_only();
        }
        let authenticator = &self.conn.shared.services.authenticator;
        if !well_formed(&response) {
            if let Err(e) = authenticator.refuse_malformed_totp(&pending.key).await {
                return self.refused(&sel, e).await;
            }
            if !self.step(&sel, SshAuthStep::TotpMalformed).await {
                return Auth::reject();
            }
            return totp_next(false);
        }
        match authenticator
            .verify_totp_after_key(&pending.key, &response.first)
            .await
        {
            Ok(identity) => {
                if !self.step(&sel, SshAuthStep::TotpOk).await {
                    return Auth::reject();
                }
                self.pending = None;
                self.finish(identity, sel).await
            }
            Err(e) => self.refused(&sel, e).await,
        }
    }

    /// Completes a login: a connection slot, a session in the shared store (listed and
    /// revoked like web sessions), the `ssh_connection_open` record, then the connection is
    /// authenticated and registered. Any failure refuses the login.
    async fn finish(&mut self, identity: VerifiedIdentity, sel: Selection) -> Auth {
        let conn = &self.conn;
        let services = &conn.shared.services;
        let Ok(slot) = conn.shared.connections.clone().try_acquire_owned() else {
            tracing::warn!(user = %identity.user(), "no connection slot free; refusing login");
            conn.refused(SshRefusal::NoConnectionSlot, None).await;
            return Auth::reject();
        };
        let token = match services
            .authenticator
            .start_ssh_session(&identity, Some(conn.client.ip()))
            .await
        {
            Ok(t) => t,
            Err(e) => {
                conn.refused(SshRefusal::SessionStoreUnavailable, None)
                    .await;
                self.fail("session store", &e);
                return Auth::reject();
            }
        };
        let dest = resolve(&sel, &conn.shared.target_configs);
        let authn = Authenticated {
            identity,
            selection: sel,
            dest,
            _slot: slot,
        };
        let opened = AuditEvent::SshConnectionOpen {
            user: authn.user().to_string(),
            target: authn.target().to_string(),
            login: authn.login().to_string(),
            method: authn.identity.method().as_str().to_string(),
            context: conn.context(),
        };
        let info = SessionInfo {
            id: conn.id.clone(),
            user: authn.user().to_string(),
            target: authn.target().to_string(),
            login: authn.login().to_string(),
            client: conn.client,
            started: std::time::SystemTime::now(),
        };
        let method = authn.identity.method().as_str();
        let recorded = conn.audit(opened).await;
        if let Err(e) = &recorded {
            self.fail("audit", e);
        }
        // Registered before it counts as authenticated: a revocation from now on reaches it.
        let registered = recorded.is_ok() && {
            let registry = &conn.shared.registry;
            registry.insert(info.clone(), conn, token.clone());
            let set = conn.auth.set(authn).is_ok();
            if !set {
                registry.remove(&conn.id);
            }
            set
        };
        if !registered {
            if let Err(e) = services.store().delete_session(token.expose()).await {
                tracing::warn!(error = %gatehouse_core::error_chain(&e), "cannot remove a refused ssh session from the store");
            }
            return Auth::reject();
        }
        tracing::info!(user = %info.user, target = %info.target, method, "ssh login");
        self.unauth = None;
        Auth::Accept
    }
}
