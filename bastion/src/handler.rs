//! The russh server handler. It only translates callbacks into [`Event`]s for the
//! connection task: authentication callbacks wait for the task's answer on a oneshot; channel
//! opens hand over russh's open handle; refused features are answered at once and reported.
//! Requests that need no decision (pty, env) are answered here so replies keep the client's
//! order; the channel task reads them again from its channel.
//!
//! Threat: a handler that blocks russh on identity, policy or audit calls (one slow store
//! stalls the connection's keep-alives and window adjustments), or that decides anything on
//! its own. Mitigation: no call here awaits anything but the bounded event queue and the
//! task's reply; passwords are never offered nor accepted; agent, X11, remote and
//! stream-local forwarding are refused here and audited by the task.

use gatehouse_core::audit::SshRefusal;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio::sync::{mpsc, oneshot};

use crate::channel::env_allowed;
use crate::error::HandlerError;
use crate::event::{Event, ForwardRequest, TotpResponse};

/// Longest answer to the TOTP prompt kept (a code is 6-10 digits; more is malformed anyway).
const MAX_RESPONSE: usize = 64;

pub(crate) struct ConnHandler {
    tx: mpsc::Sender<Event>,
    /// Told once the key exchange is done (the client asks for the authentication service).
    kex_done: Option<oneshot::Sender<()>>,
}

/// Public keys only: what every refusal offers next.
pub(crate) fn key_only() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
        partial_success: false,
    }
}

impl ConnHandler {
    pub fn new(tx: mpsc::Sender<Event>, kex_done: oneshot::Sender<()>) -> Self {
        Self {
            tx,
            kex_done: Some(kex_done),
        }
    }

    async fn tell(&self, event: Event) -> Result<(), HandlerError> {
        self.tx
            .send(event)
            .await
            .map_err(|_| HandlerError::TaskGone)
    }

    async fn ask(
        &self,
        event: impl FnOnce(oneshot::Sender<Auth>) -> Event,
    ) -> Result<Auth, HandlerError> {
        let (reply, answer) = oneshot::channel();
        self.tell(event(reply)).await?;
        answer.await.map_err(|_| HandlerError::TaskGone)
    }

    async fn refuse(&self, reason: SshRefusal) -> Result<(), HandlerError> {
        self.tell(Event::Refused(reason)).await
    }
}

fn totp_response(mut response: Response<'_>) -> TotpResponse {
    let first = response
        .next()
        .map(|b| {
            let bytes: &[u8] = &b;
            String::from_utf8_lossy(bytes.get(..MAX_RESPONSE).unwrap_or(bytes))
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    TotpResponse {
        first,
        extra: response.next().is_some(),
    }
}

impl Handler for ConnHandler {
    type Error = HandlerError;

    /// Called once the key exchange is done and the client asks for authentication.
    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        if let Some(done) = self.kex_done.take() {
            let _ = done.send(());
        }
        Ok(None)
    }

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(key_only())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        tracing::info!(ssh.user = %user, "password authentication refused");
        Ok(key_only())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.ask(|reply| Event::Key {
            name: user.to_string(),
            key: offer.public_key.clone(),
            algorithm: offer.algorithm.clone(),
            signed: false,
            reply,
        })
        .await
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.ask(|reply| Event::Key {
            name: user.to_string(),
            key: key.public_key.clone(),
            algorithm: key.algorithm.clone(),
            signed: true,
            reply,
        })
        .await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let response = response.map(totp_response);
        self.ask(|reply| Event::Totp {
            name: user.to_string(),
            response,
            reply,
        })
        .await
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.tell(Event::OpenSession {
            channel,
            reply,
            handle: session.handle(),
        })
        .await
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = ForwardRequest {
            host: host_to_connect.to_string(),
            port: port_to_connect,
            orig_host: originator_address.to_string(),
            orig_port: originator_port,
        };
        self.tell(Event::OpenForward {
            channel,
            reply,
            request,
        })
        .await
    }

    async fn channel_open_x11(
        &mut self,
        _c: Channel<Msg>,
        _a: &str,
        _p: u32,
        _r: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(SshRefusal::X11Forwarding).await
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _c: Channel<Msg>,
        _p: &str,
        _r: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(SshRefusal::StreamLocalForwarding).await
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _c: Channel<Msg>,
        _h: &str,
        _p: u32,
        _oa: &str,
        _op: u32,
        _r: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(SshRefusal::RemoteForwarding).await
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
        // Kept by the channel task and replayed on the target when the shell starts.
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
        self.refuse(SshRefusal::X11Forwarding).await
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(SshRefusal::AgentForwarding).await?;
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(SshRefusal::RemoteForwarding).await?;
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        _path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse(SshRefusal::StreamLocalForwarding).await?;
        Ok(false)
    }
}
