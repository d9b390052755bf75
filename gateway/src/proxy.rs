//! Forwarding a permitted request to its upstream and streaming the answer back.
//!
//! Threat: a request reaching an upstream without a decision; spoofed identity or forwarding
//! headers; a hung upstream tying up clients; smuggling through re-used framing headers.
//! Mitigation: [`Proxy::forward`] needs a [`Permit`] (which carries the app and the normalised
//! target); header hygiene in [`crate::headers`]; framing headers dropped so hyper re-frames;
//! connect and response-head deadlines turn into 502/504; bodies stream both ways without
//! buffering. WebSocket upgrades become a tunnel run by the connection's task (counted, and
//! closed on shutdown).

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::authz::Permit;
use crate::conn::{ConnShared, Tunnel};
use crate::error::ProxyError;
use crate::headers;
use crate::revoke::Tunnels;
use crate::web::assertion::{ASSERTION_HEADER, AssertionError, AssertionRequest, AssertionSigner};
use crate::web::cookie::strip_gatehouse_cookies;

/// The user name sent to upstreams.
pub const USER_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-user");
/// The user's groups (plain names, comma-separated) sent to upstreams.
pub const GROUPS_HEADER: HeaderName = HeaderName::from_static("x-gatehouse-groups");

/// The upstream deadlines. Upstream connections (HTTP/1.1 keep-alive) belong to the client
/// connection that opened them: see [`crate::upstream`].
#[derive(Debug)]
pub struct Proxy {
    connect_timeout: Duration,
    upstream_timeout: Duration,
}

/// What the proxy needs to know about the client side of a request.
#[derive(Debug)]
pub struct ClientSide<'a> {
    /// The Host / `:authority` the client sent.
    pub authority: &'a str,
    pub conn: &'a Arc<ConnShared>,
    pub signer: &'a AssertionSigner,
    pub tunnels: &'a Arc<Tunnels>,
    /// The policy in force (a tunnel allowed only by a grant watches it).
    pub policy: &'a Arc<gatehouse_core::policy::PolicyHandle>,
    /// The request's id (named in the record of a tunnel's end).
    pub request_id: crate::request_id::RequestId,
}

/// Adds the identity headers (after every client-sent identity header was removed).
fn add_identity(
    headers: &mut http::HeaderMap,
    permit: &Permit<'_>,
    signer: &AssertionSigner,
) -> Result<(), ProxyError> {
    let id = permit.who().identity();
    let h = signer
        .identity_headers(&AssertionRequest {
            session: permit.who().session(),
            app: &permit.app().name,
            user: id.user(),
            groups: id.groups(),
        })
        .map_err(|e| match e {
            AssertionError::IdentityHeader => ProxyError::IdentityHeader,
            e => ProxyError::Assertion(e),
        })?;
    headers.insert(USER_HEADER, h.user);
    headers.insert(GROUPS_HEADER, h.groups);
    headers.insert(ASSERTION_HEADER, h.assertion);
    Ok(())
}

impl Proxy {
    pub fn new(connect_timeout: Duration, upstream_timeout: Duration) -> Proxy {
        Proxy {
            connect_timeout,
            upstream_timeout,
        }
    }

    /// Forwards `req` as `permit` allows and returns the upstream's response head with its
    /// body still streaming.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        permit: &Permit<'_>,
        client: ClientSide<'_>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let websocket =
            req.version() == Version::HTTP_11 && headers::wants_websocket(req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::prepare_request(
            &mut parts.headers,
            websocket,
            &client.conn.forwarded_for,
            client.authority,
        );
        strip_gatehouse_cookies(&mut parts.headers);
        add_identity(&mut parts.headers, permit, client.signer)?;
        // Origin form on the wire; Host is the client's (prepare_request keeps it).
        parts.uri = Uri::from(permit.target().clone());
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let upstream_req = Request::from_parts(parts, body);

        let upstream = &permit.app().upstream;
        let mut resp = client
            .conn
            .deadlines
            .within(
                self.upstream_timeout,
                client
                    .conn
                    .upstreams
                    .send(upstream, upstream_req, self.connect_timeout),
            )
            .await
            .ok_or(ProxyError::UpstreamTimeout)??;

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let Some(client_upgrade) = client_upgrade else {
                // We never asked for an upgrade (Upgrade is stripped): a 101 is a protocol error.
                tracing::warn!(app = %permit.app().name, "upstream switched protocols unasked");
                return Err(ProxyError::UpstreamProtocol);
            };
            let who = permit.who();
            client.conn.upgrade(Tunnel {
                client: client_upgrade,
                upstream: hyper::upgrade::on(&mut resp),
                app: permit.app().name.clone(),
                registration: client.tunnels.register(
                    who.identity().user(),
                    who.session().as_str(),
                    who.token().clone(),
                    &crate::guard::host_name(client.authority)
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                ),
                grant: permit.grant_watch(client.policy),
                user: who.identity().user().to_string(),
                context: gatehouse_core::audit::AccessContext {
                    client_addr: Some(client.conn.peer.ip()),
                    session: Some(who.session().as_str().to_string()),
                    request_id: Some(client.request_id.to_string()),
                },
            });
        }
        let dropped = headers::prepare_response(resp.headers_mut(), switching);
        if dropped > 0 {
            tracing::warn!(app = %permit.app().name, user = %permit.who().identity().user(), dropped, "upstream tried to set Gatehouse's session cookie; Set-Cookie dropped");
        }
        Ok(resp)
    }
}
