//! The russh server handler: authentication callbacks (key, then TOTP) and the translation of
//! channel callbacks into per-channel tasks. Requests that need no target (pty, env) are
//! answered here so replies keep the client's order; everything else runs in the tasks.
//!
//! Threat: authentication confusion (a key probe counted as proof, partial success carried
//! to another user name, password guessing) and forbidden features (agent, X11, remote and
//! stream-local forwarding). Mitigation: only `auth_publickey` (verified signature) counts;
//! the partial state is bound to the exact user name; passwords are never offered nor
//! accepted; forbidden requests are refused and audited.

use std::borrow::Cow;
use std::sync::Arc;

use russh::keys::{Algorithm, PublicKey};
use russh::server::{Auth, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::{Selection, parse_user_name, requires_totp, resolve};
use crate::backend::{AuthFailure, BastionEvent, RefusedFeature, TotpOutcome};
use crate::error::HandlerError;
use crate::session::Conn;

/// Environment variables passed to targets; everything else is refused.
pub(crate) fn env_allowed(name: &str) -> bool {
    name == "LANG" || name == "TERM" || (name.starts_with("LC_") && name.len() <= 32)
}

/// Longest TOTP code accepted (digits only).
const MAX_CODE: usize = 10;

struct Pending {
    /// The exact SSH user name the key was verified under.
    name: String,
    selection: Selection,
}

pub(crate) struct ConnHandler {
    conn: Arc<Conn>,
    pending: Option<Pending>,
    unauth: Option<OwnedSemaphorePermit>,
}

impl ConnHandler {
    pub fn new(conn: Arc<Conn>, unauth: OwnedSemaphorePermit) -> Self {
        Self {
            conn,
            pending: None,
            unauth: Some(unauth),
        }
    }

    fn key_only() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }

    fn totp_next(partial: bool) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::KeyboardInteractive][..])),
            partial_success: partial,
        }
    }

    async fn audit_failure(&self, user: &str, reason: AuthFailure) -> Result<(), HandlerError> {
        let backend = &self.conn.shared.backend;
        backend.note_failure(user, self.conn.client, reason).await?;
        backend
            .audit(BastionEvent::AuthFailed {
                user: user.to_string(),
                client: self.conn.client,
                reason,
            })
            .await?;
        Ok(())
    }

    /// Whether `key` is one of the user's registered keys and the user may try to log in.
    async fn key_allowed(
        &self,
        sel: &Selection,
        key: &PublicKey,
        algorithm: &Algorithm,
    ) -> Result<bool, HandlerError> {
        // ssh-rsa signs with SHA-1: refused whatever the key.
        if matches!(algorithm, Algorithm::Rsa { hash: None }) {
            return Ok(false);
        }
        let backend = &self.conn.shared.backend;
        if backend.is_locked(&sel.user, self.conn.client).await? {
            self.audit_failure(&sel.user, AuthFailure::Locked).await?;
            return Ok(false);
        }
        let keys = backend.authorized_keys(&sel.user).await?;
        Ok(keys.iter().any(|k| k.key_data() == key.key_data()))
    }

    /// Completes authentication; `false` refuses it (audit failed, no connection slot).
    async fn finish(&mut self, sel: Selection, totp: bool) -> Result<bool, HandlerError> {
        let shared = &self.conn.shared;
        let dest = resolve(&sel, &shared.target_configs);
        let event = BastionEvent::AuthSucceeded {
            user: sel.user.clone(),
            client: self.conn.client,
            target: sel.target.clone(),
            login: dest
                .as_ref()
                .map(|d| d.login.clone())
                .or_else(|| sel.login.clone())
                .unwrap_or_default(),
            totp,
        };
        if let Err(e) = shared.backend.audit(event).await {
            tracing::error!(error = %e, "cannot audit a login; refusing it");
            return Ok(false);
        }
        let user = sel.user.clone();
        let info = self.conn.session_info(&user, &sel, dest.as_ref());
        if let Err(e) = shared.backend.session_opened(&info, totp).await {
            tracing::error!(error = %crate::error_chain(&e), "cannot register the session; refusing the login");
            return Ok(false);
        }
        if !self.conn.authenticate(info.clone(), sel, dest) {
            tracing::warn!(user = %user, "no connection slot free; refusing login");
            shared.backend.session_closed(&info).await;
            return Ok(false);
        }
        tracing::info!(user = %user, totp, "ssh login");
        self.pending = None;
        self.unauth = None;
        Ok(true)
    }

    async fn refuse(&self, feature: RefusedFeature) {
        let (user, target) = match self.conn.auth.get() {
            Some(a) => (a.user.clone(), a.selection.target.clone()),
            None => (String::new(), String::new()),
        };
        tracing::info!(user = %user, feature = ?feature, "refused ssh feature");
        let event = BastionEvent::Refused {
            user,
            client: self.conn.client,
            target,
            feature,
        };
        if let Err(e) = self.conn.shared.backend.audit(event).await {
            tracing::error!(error = %e, "cannot audit a refusal");
        }
    }
}

impl Handler for ConnHandler {
    type Error = HandlerError;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::key_only())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        tracing::info!(ssh.user = %user, "password authentication refused");
        Ok(Self::key_only())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.pending.as_ref().is_some_and(|p| p.name != user) {
            self.pending = None;
        }
        let Some(sel) = parse_user_name(user) else {
            return Ok(Self::key_only());
        };
        if self
            .key_allowed(&sel, offer.public_key, offer.algorithm)
            .await?
        {
            // Only "this key may sign": nothing is authenticated until the signature arrives.
            return Ok(Auth::Accept);
        }
        self.audit_failure(&sel.user, AuthFailure::UnknownKey)
            .await?;
        Ok(Self::key_only())
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.pending = None;
        let Some(sel) = parse_user_name(user) else {
            return Ok(Self::key_only());
        };
        if !self
            .key_allowed(&sel, key.public_key, key.algorithm)
            .await?
        {
            self.audit_failure(&sel.user, AuthFailure::UnknownKey)
                .await?;
            return Ok(Self::key_only());
        }
        if requires_totp(&sel, &self.conn.shared.target_configs) {
            self.pending = Some(Pending {
                name: user.to_string(),
                selection: sel,
            });
            return Ok(Self::totp_next(true));
        }
        if self.finish(sel, false).await? {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(pending) = self.pending.as_ref().filter(|p| p.name == user) else {
            // No verified key under this exact name: start over with the key.
            self.pending = None;
            return Ok(Self::key_only());
        };
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: Cow::Borrowed("Gatehouse"),
                instructions: Cow::Borrowed("Second factor for the bastion."),
                prompts: Cow::Owned(vec![(Cow::Borrowed("TOTP code: "), false)]),
            });
        };
        let sel = pending.selection.clone();
        let code = response
            .next()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        if response.next().is_some()
            || code.is_empty()
            || code.len() > MAX_CODE
            || !code.bytes().all(|b| b.is_ascii_digit())
        {
            self.audit_failure(&sel.user, AuthFailure::MalformedTotp)
                .await?;
            return Ok(Self::totp_next(false));
        }
        let outcome = self
            .conn
            .shared
            .backend
            .check_totp(&sel.user, &code, self.conn.client)
            .await?;
        match outcome {
            TotpOutcome::Valid => {
                if self.finish(sel, true).await? {
                    Ok(Auth::Accept)
                } else {
                    Ok(Auth::reject())
                }
            }
            TotpOutcome::Invalid => {
                self.audit_failure(&sel.user, AuthFailure::BadTotp).await?;
                Ok(Self::totp_next(false))
            }
            TotpOutcome::Replayed => {
                self.audit_failure(&sel.user, AuthFailure::ReplayedTotp)
                    .await?;
                Ok(Self::totp_next(false))
            }
            TotpOutcome::Locked => {
                self.audit_failure(&sel.user, AuthFailure::Locked).await?;
                self.pending = None;
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.conn.auth.get().is_none() || self.conn.cancel.is_cancelled() {
            return Ok(()); // dropping `reply` refuses the channel
        }
        reply.accept().await;
        let conn = self.conn.clone();
        let handle = session.handle();
        self.conn
            .channels
            .spawn(crate::relay::session_channel(conn, channel, handle));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.conn.auth.get().is_none() || self.conn.cancel.is_cancelled() {
            return Ok(());
        }
        let req = crate::forward::Request {
            host: host_to_connect.to_string(),
            port: port_to_connect,
            orig_host: originator_address.to_string(),
            orig_port: originator_port,
        };
        self.conn.channels.spawn(crate::forward::direct_tcpip(
            self.conn.clone(),
            channel,
            reply,
            req,
        ));
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _c: Channel<Msg>,
        _a: &str,
        _p: u32,
        _r: russh::server::ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(RefusedFeature::X11Forwarding).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _c: Channel<Msg>,
        _p: &str,
        _r: russh::server::ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(RefusedFeature::StreamLocalForwarding).await;
        Ok(())
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _c: Channel<Msg>,
        _h: &str,
        _p: u32,
        _oa: &str,
        _op: u32,
        _r: russh::server::ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(RefusedFeature::RemoteForwarding).await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Stored by the channel task and replayed on the target when the shell starts.
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if env_allowed(name) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _s: bool,
        _p: &str,
        _c: &str,
        _n: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        self.refuse(RefusedFeature::X11Forwarding).await;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(RefusedFeature::AgentForwarding).await;
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(RefusedFeature::RemoteForwarding).await;
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        _path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(RefusedFeature::StreamLocalForwarding).await;
        Ok(false)
    }
}
