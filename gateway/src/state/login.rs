//! What the `/.gatehouse/` endpoints need to know, computed once at bind: the redirect
//! policy, the gateway's own origins and hosts, the portal's app list, and the logins
//! waiting for their second factor.

use std::collections::HashSet;
use std::time::Duration;

use gatehouse_core::Config;

use super::pending::{Pending, PendingEnrolment, PendingSsoTotp};
use super::throttle::SsoThrottle;
use crate::web::cookie;
use crate::web::redirect::RedirectPolicy;

/// What the login endpoints need, computed once at bind.
#[derive(Debug)]
pub struct LoginCtx {
    pub redirect: RedirectPolicy,
    /// The gateway's own browser origins (for the `Origin` check).
    pub origins: Vec<String>,
    /// (app name, portal URL) for every configured app.
    pub apps: Vec<(String, String)>,
    pub session_ttl: Duration,
    /// TOTP enrolments in progress (local and SSO users).
    pub pending: Pending<PendingEnrolment>,
    /// SSO logins waiting for the user's TOTP code.
    pub sso_totp: Pending<PendingSsoTotp>,
    /// Each address's budget of SSO starts and callbacks.
    pub sso_throttle: SsoThrottle,
    /// Where a provider sends the browser after its logout (same-site: the public host's
    /// signed-out page; register it at the provider).
    pub post_logout_uri: String,
    /// The hosts `/.gatehouse/` is served on: the public host and every app host.
    pub hosts: HashSet<String>,
    /// The public host (lowercase) and its browser origin.
    pub public_host: String,
    pub public_origin: String,
    /// `:PORT` when the gateway's port is not 443, else empty.
    pub port: String,
}

impl LoginCtx {
    pub fn new(config: &Config) -> LoginCtx {
        let redirect = RedirectPolicy::from_config(config);
        let origins = redirect.origins();
        let port = match config.gateway.public_url.port_or_known_default() {
            Some(443) | None => String::new(),
            Some(p) => format!(":{p}"),
        };
        let apps = config
            .apps
            .iter()
            .map(|a| {
                let path = a
                    .path_prefix
                    .as_deref()
                    .map_or_else(|| "/".to_string(), |p| format!("{p}/"));
                (a.name.clone(), format!("https://{}{port}{path}", a.host))
            })
            .collect();
        let hosts = config
            .gateway
            .public_url
            .host_str()
            .map(str::to_ascii_lowercase)
            .into_iter()
            .chain(config.apps.iter().map(|a| a.host.to_ascii_lowercase()))
            .collect();
        let public_host = config
            .gateway
            .public_url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let public_origin = config.gateway.public_url.origin().ascii_serialization();
        LoginCtx {
            public_host,
            public_origin,
            port: port.clone(),
            hosts,
            redirect,
            origins,
            apps,
            session_ttl: config.identity.session_ttl,
            pending: Pending::new(cookie::LOGIN_MAX_AGE),
            sso_totp: Pending::new(cookie::LOGIN_MAX_AGE),
            sso_throttle: SsoThrottle::default(),
            post_logout_uri: config
                .gateway
                .public_url
                .join(crate::web::SIGNED_OUT_PATH)
                .map(String::from)
                .unwrap_or_default(),
        }
    }
}
