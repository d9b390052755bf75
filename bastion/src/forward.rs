//! Local port forwarding (`ssh -L`, direct-tcpip): allowed only where the policy grants
//! `port-forward` on the target, opened from the target's side, each forward audited with its
//! destination and byte counts.
//!
//! Threat: the bastion used as an open proxy into the network. Mitigation: the connection is
//! made by the target (never by the bastion itself), only with a [`Permit`](crate::Permit) for
//! `port-forward`; a denial refuses the channel and is audited.

use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};

use crate::auth;
use crate::backend::{BastionEvent, SshAction};
use crate::session::Conn;

pub(crate) struct Request {
    pub host: String,
    pub port: u32,
    pub orig_host: String,
    pub orig_port: u32,
}

pub(crate) async fn direct_tcpip(
    conn: Arc<Conn>,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    req: Request,
) {
    let Some(authn) = conn.auth.get() else { return };
    let backend = &conn.shared.backend;
    let valid = !req.host.is_empty() && req.host.len() <= 255 && req.port > 0 && req.port <= 65535;
    let Some(dest) = authn.dest.as_ref().filter(|_| valid) else {
        let sel = &authn.selection;
        let object = format!("ssh:{}/{}", sel.target, sel.login.as_deref().unwrap_or(""));
        let event = BastionEvent::AccessDenied {
            user: authn.user.clone(),
            client: conn.client,
            object,
            action: SshAction::PortForward,
            rule: None,
        };
        if let Err(e) = backend.audit(event).await {
            tracing::error!(error = %e, "cannot audit a denial");
        }
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    };
    let permit = match auth::authorize(backend.as_ref(), dest, SshAction::PortForward, conn.client)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) | Err(_) => {
            tracing::info!(user = %dest.user, target = %dest.target.name, host = %req.host, port = req.port, decision = "deny", "port forward denied");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
    };
    let target = match conn.target(&permit).await {
        Ok(t) => t,
        Err(_) => {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    let tch = match target
        .open_direct_tcpip(
            &permit,
            &req.host,
            req.port,
            (&req.orig_host, req.orig_port),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %crate::error_chain(&e), host = %req.host, port = req.port, "target could not open the forward");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        }
    };
    let opened = BastionEvent::ForwardOpened {
        session_id: conn.id.clone(),
        user: dest.user.clone(),
        target: dest.target.name.clone(),
        host: req.host.clone(),
        port: req.port,
    };
    if let Err(e) = backend.audit(opened).await {
        tracing::error!(error = %e, "cannot audit a forward; refusing it");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    reply.accept().await;
    tracing::info!(user = %dest.user, target = %dest.target.name, host = %req.host, port = req.port, "port forward opened");

    let (mut crx, ctx) = channel.split();
    let (mut trx, ttx) = tch.split();
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
        _ = conn.cancel.cancelled() => {}
    }
    let _ = ttx.close().await;
    let _ = ctx.close().await;
    let closed = BastionEvent::ForwardClosed {
        session_id: conn.id.clone(),
        user: dest.user.clone(),
        target: dest.target.name.clone(),
        host: req.host,
        port: req.port,
        bytes_up: up_bytes,
        bytes_down: down_bytes,
    };
    if let Err(e) = backend.audit(closed).await {
        tracing::error!(error = %e, "cannot audit a forward end");
    }
}
