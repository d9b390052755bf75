//! Local port forwarding (`ssh -L`, direct-tcpip): allowed only where core's policy grants
//! `port-forward` on the target, opened from the target's side, each forward audited with
//! its destination, whether it was allowed, and its byte counts.
//!
//! Threat: the bastion used as an open proxy into the network. Mitigation: the connection is
//! made by the target (never by the bastion itself), only with core's permit for
//! `port-forward`; a denial refuses the channel and is audited.

use std::sync::Arc;

use gatehouse_core::audit::{AuditEvent, SshRefusal};
use gatehouse_core::policy::{GrantWatch, lapsed};
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure, client};

use crate::auth::SshAction;
use crate::conn::Conn;
use crate::event::ForwardRequest;

/// Longest host name accepted in a forward request.
const MAX_HOST: usize = 255;

fn valid(req: &ForwardRequest) -> bool {
    !req.host.is_empty() && req.host.len() <= MAX_HOST && (1..=65535).contains(&req.port)
}

/// The `port_forward` (or `port_forward_end`) record's common fields.
struct Names {
    user: String,
    target: String,
    login: String,
    destination: String,
}

impl Names {
    fn of(conn: &Conn, req: &ForwardRequest) -> Names {
        let (user, target, login) = match conn.auth.get() {
            Some(a) => (a.user(), a.target(), a.login()),
            None => ("", "", ""),
        };
        Names {
            user: user.to_string(),
            target: target.to_string(),
            login: login.to_string(),
            destination: format!("{}:{}", req.host, req.port),
        }
    }

    async fn audit(&self, conn: &Conn, allowed: bool) -> bool {
        let event = AuditEvent::PortForward {
            user: self.user.clone(),
            target: self.target.clone(),
            login: self.login.clone(),
            destination: self.destination.clone(),
            allowed,
            context: conn.context(),
        };
        match conn.audit(event).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a forward");
                false
            }
        }
    }
}

/// Runs one direct-tcpip channel: authorize, open from the target, splice, audit.
pub(crate) async fn run(
    conn: Arc<Conn>,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    req: ForwardRequest,
) {
    let names = Names::of(&conn, &req);
    if !valid(&req) {
        conn.refused(SshRefusal::MalformedForward, None).await;
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    let Ok(permit) = conn.authorize(SshAction::PortForward).await else {
        names.audit(&conn, false).await;
        tracing::info!(user = %names.user, destination = %names.destination, decision = "deny", "port forward denied");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    };
    let opened = match conn.target(&permit).await {
        Ok(t) => {
            t.open_direct_tcpip(
                &permit,
                &req.host,
                req.port,
                (&req.orig_host, req.orig_port),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let target = match opened {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %gatehouse_core::error_chain(&e), destination = %names.destination, "target could not open the forward");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    if !names.audit(&conn, true).await {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    reply.accept().await;
    tracing::info!(user = %names.user, destination = %names.destination, "port forward opened");
    // Allowed only by a grant: the forward closes when the grant ends.
    let grant = conn.watch_grant(&permit);
    let (bytes_up, bytes_down) = splice(&conn, channel, target, grant).await;
    let closed = AuditEvent::PortForwardEnd {
        user: names.user,
        target: names.target,
        login: names.login,
        destination: names.destination,
        bytes_up,
        bytes_down,
        context: conn.context(),
    };
    if let Err(e) = conn.audit(closed).await {
        tracing::error!(error = %gatehouse_core::error_chain(&e), "cannot audit a forward end");
    }
}

/// Copies both ways until both sides close, the connection ends or the grant that allowed
/// the forward ends; the bytes each way.
async fn splice(
    conn: &Conn,
    client: Channel<Msg>,
    target: Channel<client::Msg>,
    grant: Option<GrantWatch>,
) -> (u64, u64) {
    let (mut crx, ctx) = client.split();
    let (mut trx, ttx) = target.split();
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let up = async {
        loop {
            match crx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    up_bytes += data.len() as u64;
                    if ttx.data_bytes(data).await.is_err() {
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = ttx.eof().await;
                }
                None | Some(ChannelMsg::Close) => return,
                Some(_) => {}
            }
        }
    };
    let down = async {
        loop {
            match trx.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    down_bytes += data.len() as u64;
                    if ctx.data_bytes(data).await.is_err() {
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    let _ = ctx.eof().await;
                }
                None | Some(ChannelMsg::Close) => return,
                Some(_) => {}
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = conn.ending.ended() => {}
        lapse = lapsed(grant) => conn.grant_ended(&lapse).await,
    }
    let _ = ttx.close().await;
    let _ = ctx.close().await;
    (up_bytes, down_bytes)
}
