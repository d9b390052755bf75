//! Sessions on several hosts, the way a browser gets them: a session cookie is valid only on
//! the host it was issued to, so a user signs in once on the public host and each app host
//! redeems a one-time ticket from it (`/.gatehouse/handoff`).

use super::client::full;
use super::gatehouse::Gatehouse;
use super::identity::{PUBLIC_HOST, SESSION_COOKIE, TestUser, session_pair, set_cookie, urlencode};
use super::{QUICK, within};

pub use super::identity::hidden_field;

impl Gatehouse {
    /// `:PORT` of the public URL (empty when it has none).
    fn public_port(&self) -> String {
        self.spec
            .gateway_port
            .map_or_else(String::new, |p| format!(":{p}"))
    }

    /// Carries the public host's session (`public_cookie`, `__Host-gatehouse=VALUE`) to
    /// `app_host` by the real handoff: the ticket page on the public host, its form posted to
    /// the app host with the public host's `Origin`. Returns the app host's session cookie.
    pub async fn handoff(&self, public_cookie: &str, app_host: &str) -> String {
        let port = self.public_port();
        let next = format!("https://{app_host}{port}/");
        let mut c = self.h1_anon(PUBLIC_HOST).await;
        let req = c.request(
            "GET",
            &format!("/.gatehouse/handoff?next={}", urlencode(&next)),
            &[("cookie", public_cookie)],
            super::client::empty(),
        );
        let page = within(QUICK, "handoff page", c.send(req)).await;
        assert_eq!(page.status, 200, "handoff page: {}", page.text());
        let html = page.text();
        let ticket = hidden_field(&html, "ticket").expect("a ticket in the handoff page");
        let back = hidden_field(&html, "next").expect("next in the handoff page");
        let mut c = self.h1_anon(app_host).await;
        let origin = format!("https://{PUBLIC_HOST}{port}");
        let body = format!("ticket={ticket}&next={}", urlencode(&back));
        let req = c.request(
            "POST",
            "/.gatehouse/handoff",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", &origin),
            ],
            full(body),
        );
        let r = within(QUICK, "redeem", c.send(req)).await;
        assert_eq!(r.status, 303, "redeem on {app_host}: {}", r.text());
        let value = set_cookie(&r, SESSION_COOKIE).expect("a session cookie from the handoff");
        session_pair(&value)
    }

    /// Signs `user` in once on the public host and carries that session to each of `hosts`:
    /// one cookie per host, in order.
    pub async fn login_hosts(&self, user: &TestUser, hosts: &[&str]) -> Vec<String> {
        let public = self.login(PUBLIC_HOST, user).await;
        let mut out = Vec::new();
        for h in hosts {
            out.push(self.handoff(&public, h).await);
        }
        out
    }
}
