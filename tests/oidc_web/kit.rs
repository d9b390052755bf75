//! What the SSO tests through the binary share: a provider and a gateway configured for each
//! other, and [`Web`], a scripted browser that keeps Gatehouse's cookies per host, goes
//! through the provider's own pages ([`ProviderBrowser`]), Gatehouse's callback, TOTP or
//! enrolment page and the handoff to an app host, as a browser would.

use std::collections::BTreeMap;

use serde_json::Value;
use totp_rs::Totp;

use crate::support::client::{Resp, empty, full};
use crate::support::handoff::hidden_field;
use crate::support::identity::{
    LOGIN_COOKIE, SESSION_COOKIE, csrf_in, form, otpauth_in, totp_from_base32, unix_now, urlencode,
};
use crate::support::oidc_browser::{ProviderBrowser, Reached};
use crate::support::oidc_provider::{AccountSpec, ClientSpec, OidcProvider, ProviderSpec};
use crate::support::{AppSpec, Gatehouse, GatehouseSpec, QUICK, TestDir, Upstream, host, within};

pub const PUBLIC: &str = "gatehouse.localhost";
pub const START_PATH: &str = "/.gatehouse/oidc/start";
pub const CALLBACK_PATH: &str = "/.gatehouse/oidc/callback";
pub const TOTP_PATH: &str = "/.gatehouse/login/totp";
pub const ENROL_PATH: &str = "/.gatehouse/enrol";
pub const SIGNED_OUT_PATH: &str = "/.gatehouse/signed-out";

/// `staff` may use the wiki except its admin pages; `admins` may use those too; anyone in
/// `contractors` is denied the wiki outright (a deny wins).
pub const POLICY: &str = "\
p, group:staff, app:wiki/*, GET|HEAD|POST, allow
p, group:staff, app:wiki/admin/*, *, deny
p, group:contractors, app:wiki/*, *, deny
";

/// The public URL of a gateway whose config has no fixed port (the test config's).
pub fn public_url(port: Option<u16>) -> String {
    match port {
        Some(p) => format!("https://{PUBLIC}:{p}"),
        None => format!("https://{PUBLIC}"),
    }
}

/// A client registered for a gateway at `public`: its callback and signed-out page.
pub fn client_for(id: &str, public: &str) -> ClientSpec {
    let mut c = ClientSpec::new(
        id,
        &format!("secret-of-{id}"),
        &format!("{public}{CALLBACK_PATH}"),
    );
    c.post_logout_redirect_uris = vec![format!("{public}{SIGNED_OUT_PATH}")];
    c
}

/// A provider with `accounts` and one client for the test gateway (`port`: its public port).
pub async fn provider(accounts: Vec<AccountSpec>, port: Option<u16>) -> OidcProvider {
    OidcProvider::start_async(ProviderSpec {
        clients: vec![client_for("gatehouse", &public_url(port))],
        accounts,
        ..ProviderSpec::default()
    })
    .await
}

/// One `[[identity.oidc]]` block.
pub struct Idp<'a> {
    pub name: &'a str,
    pub issuer: &'a str,
    /// More lines (`trust_mfa = true`).
    pub extra: &'a str,
}

/// `[[identity.oidc]]` blocks for `idps` (client `gatehouse`, its secret in a 0600 file in
/// `secrets`), asking for the groups scope.
pub fn oidc_toml(secrets: &TestDir, idps: &[Idp<'_>]) -> String {
    let mut s = String::new();
    for p in idps {
        let file = secrets.write(format!("{}.secret", p.name), "secret-of-gatehouse");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        s.push_str(&format!(
            "\n[[identity.oidc]]\nname = \"{}\"\nissuer = \"{}\"\nclient_id = \"gatehouse\"\n\
             client_secret_file = \"{}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n{}\n",
            p.name,
            p.issuer,
            file.display(),
            p.extra
        ));
    }
    s
}

/// The gateway with the `wiki` app on `up`, [`POLICY`] and these providers.
pub async fn gateway(up: &Upstream, secrets: &TestDir, idps: &[Idp<'_>]) -> Gatehouse {
    gateway_with(up, secrets, idps, GatehouseSpec::default()).await
}

pub async fn gateway_with(
    up: &Upstream,
    secrets: &TestDir,
    idps: &[Idp<'_>],
    spec: GatehouseSpec,
) -> Gatehouse {
    let spec = GatehouseSpec {
        policy_csv: Some(POLICY.into()),
        extra_toml: oidc_toml(secrets, idps),
        ..spec
    }
    .with_app(AppSpec::new("wiki", &host("wiki"), &up.url()));
    Gatehouse::start(spec).await
}

/// The value a `Set-Cookie` of `r` gives cookie `name`: `Some("")` when it deletes it.
fn cookie_set(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (n, rest) = v.split_once('=')?;
            (n.trim() == name).then(|| {
                let value = rest.split(';').next().unwrap_or("").trim();
                if v.contains("Max-Age=0") {
                    String::new()
                } else {
                    value.to_string()
                }
            })
        })
}

/// A scripted browser: Gatehouse's cookies per host, the provider's in a [`ProviderBrowser`].
pub struct Web<'a> {
    pub gh: &'a Gatehouse,
    jar: BTreeMap<String, BTreeMap<String, String>>,
    pub provider: ProviderBrowser,
}

/// Where a login through [`Web::sso`] stopped.
#[derive(Debug)]
pub enum Step {
    /// The callback asked for the TOTP code (`/.gatehouse/login/totp`).
    Totp,
    /// The callback asked for a first enrolment (`/.gatehouse/enrol`).
    Enrol,
    /// Signed in: the redirect after the session was set.
    SignedIn { location: String },
    /// Anything else: the callback's answer.
    Refused(Resp),
}

impl<'a> Web<'a> {
    pub fn new(gh: &'a Gatehouse) -> Web<'a> {
        let public = public_url(gh.spec.gateway_port);
        Web {
            gh,
            jar: BTreeMap::new(),
            provider: ProviderBrowser::new(&public, None),
        }
    }

    /// The `Cookie` header this browser sends to `host`.
    pub fn cookies(&self, host: &str) -> Option<String> {
        let c = self.jar.get(host)?;
        (!c.is_empty()).then(|| {
            c.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// The session cookie's value on `host`.
    pub fn session(&self, host: &str) -> Option<String> {
        self.jar.get(host)?.get(SESSION_COOKIE).cloned()
    }

    fn keep(&mut self, host: &str, r: &Resp) {
        for name in [SESSION_COOKIE, LOGIN_COOKIE] {
            match cookie_set(r, name) {
                Some(v) if v.is_empty() => {
                    self.jar.entry(host.into()).or_default().remove(name);
                }
                Some(v) => {
                    self.jar
                        .entry(host.into())
                        .or_default()
                        .insert(name.into(), v);
                }
                None => {}
            }
        }
    }

    /// A request to `host` with this browser's cookies there (and `extra` headers).
    pub async fn send(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<String>,
    ) -> Resp {
        let mut c = self.gh.h1_anon(host).await;
        let cookies = self.cookies(host);
        let mut headers: Vec<(&str, &str)> = vec![("accept", "text/html")];
        if let Some(ck) = cookies.as_deref() {
            headers.push(("cookie", ck));
        }
        if body.is_some() {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
        }
        headers.extend_from_slice(extra);
        let b = match body {
            Some(b) => full(b),
            None => empty(),
        };
        let req = c.request(method, path, &headers, b);
        let r = within(QUICK, path, c.send(req)).await;
        self.keep(host, &r);
        r
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Resp {
        self.send("GET", host, path, &[], None).await
    }

    pub async fn post(&mut self, host: &str, path: &str, body: String) -> Resp {
        self.send("POST", host, path, &[], Some(body)).await
    }

    /// Clicks `provider`'s button (GET start on the public host): the provider URL.
    pub async fn start(&mut self, provider: &str, next: Option<&str>) -> Resp {
        let mut path = format!("{START_PATH}?provider={}", urlencode(provider));
        if let Some(n) = next {
            path.push_str(&format!("&next={}", urlencode(n)));
        }
        self.get(PUBLIC, &path).await
    }

    /// Signs in at the provider from a start answer; the callback URL's path and query.
    pub async fn at_provider(&mut self, start: &Resp, login: &str) -> String {
        assert_eq!(start.status, 303, "start: {}", start.text());
        let url = start.header("location").expect("start redirects");
        let reached = self
            .provider
            .sign_in(&url, login, &format!("pw-{login}"))
            .await;
        callback_path(&reached)
    }

    /// The callback (path and query) in this browser, and where it leads.
    pub async fn callback(&mut self, path: &str) -> Step {
        let r = self.get(PUBLIC, path).await;
        let location = r.header("location").unwrap_or_default();
        match (r.status.as_u16(), location.as_str()) {
            (303, TOTP_PATH) => Step::Totp,
            (303, ENROL_PATH) => Step::Enrol,
            (303, _) if cookie_set(&r, SESSION_COOKIE).is_some_and(|v| !v.is_empty()) => {
                Step::SignedIn { location }
            }
            _ => Step::Refused(r),
        }
    }

    /// Start, provider, callback: where the login stands.
    pub async fn sso(&mut self, provider: &str, login: &str, next: Option<&str>) -> Step {
        let start = self.start(provider, next).await;
        let cb = self.at_provider(&start, login).await;
        self.callback(&cb).await
    }

    /// The enrolment page: confirms its secret with a first code; the TOTP generator and
    /// the answer (303 with a session when accepted).
    pub async fn enrol(&mut self) -> (Totp, Resp) {
        let page = self.get(PUBLIC, ENROL_PATH).await;
        assert_eq!(page.status, 200, "enrol page: {}", page.text());
        let html = page.text();
        let (_, secret) = otpauth_in(&html).expect("an otpauth URI on the enrolment page");
        let totp = totp_from_base32(&secret);
        let csrf = csrf_in(&html).expect("csrf on the enrolment page");
        let code = totp.generate(unix_now()).to_string();
        let r = self
            .post(
                PUBLIC,
                ENROL_PATH,
                form(&[("csrf", &csrf), ("code", &code)]),
            )
            .await;
        (totp, r)
    }

    /// The TOTP page: submits `code`; the answer.
    pub async fn totp(&mut self, code: &str) -> Resp {
        let page = self.get(PUBLIC, TOTP_PATH).await;
        assert_eq!(page.status, 200, "totp page: {}", page.text());
        let csrf = csrf_in(&page.text()).expect("csrf on the totp page");
        self.post(PUBLIC, TOTP_PATH, form(&[("csrf", &csrf), ("code", code)]))
            .await
    }

    /// From the public host's session to one on `app_host` (the handoff page's form posted
    /// with the public host's Origin); the redeeming answer.
    pub async fn handoff(&mut self, location: &str) -> Resp {
        let page = self.get(PUBLIC, location).await;
        assert_eq!(
            page.status,
            200,
            "handoff page at {location}: {}",
            page.text()
        );
        let html = page.text();
        let action = attr(&html, "<form", "action").expect("the handoff form's action");
        let u = url::Url::parse(&action).unwrap();
        let app_host = u.host_str().unwrap().to_string();
        let ticket = hidden_field(&html, "ticket").unwrap();
        let next = hidden_field(&html, "next").unwrap().replace("&amp;", "&");
        let origin = public_url(self.gh.spec.gateway_port);
        self.send(
            "POST",
            &app_host,
            u.path(),
            &[("origin", &origin)],
            Some(form(&[("ticket", &ticket), ("next", &next)])),
        )
        .await
    }

    /// GETs `path` on the wiki with this browser's wiki cookies: the upstream's echo.
    pub async fn wiki(&mut self, path: &str) -> Resp {
        self.get(&host("wiki"), path).await
    }
}

/// The value of `attr` in the first tag starting with `tag`.
pub fn attr(html: &str, tag: &str, attr: &str) -> Option<String> {
    let i = html.find(tag)?;
    let end = i + html[i..].find('>')?;
    let t = &html[i..end];
    let key = format!("{attr}=\"");
    let v = t.find(&key)? + key.len();
    let e = t[v..].find('"')?;
    Some(t[v..v + e].replace("&amp;", "&"))
}

/// The path and query of the callback a provider login reached.
pub fn callback_path(reached: &Reached) -> String {
    match reached {
        Reached::Gatehouse(url) => {
            let u = url::Url::parse(url).unwrap();
            assert_eq!(u.path(), CALLBACK_PATH, "{url}");
            format!("{}?{}", u.path(), u.query().unwrap_or_default())
        }
        Reached::Page { status, body } => {
            panic!("the provider did not redirect back: {status}\n{body}")
        }
    }
}

/// The audit events of kind `kind` in `gh`'s log.
pub fn audit_of(gh: &Gatehouse, kind: &str) -> Vec<Value> {
    gh.audit_events()
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

/// The `sso_failure` records written so far, as (check, provider).
pub fn sso_failures(gh: &Gatehouse) -> Vec<(String, String)> {
    audit_of(gh, "sso_failure")
        .iter()
        .map(|e| {
            (
                e["check"].as_str().unwrap_or_default().to_string(),
                e["provider"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

/// Asserts `r` is an SSO failure page of `status` with a request id, no session set, the
/// login cookie cleared, and nothing said about the check.
pub fn assert_failure_page(r: &Resp, status: u16, check: &str) {
    let html = r.text();
    assert_eq!(r.status, status, "{html}");
    assert!(html.contains("class=\"request-id\""), "{html}");
    assert!(
        cookie_set(r, SESSION_COOKIE).is_none_or(|v| v.is_empty()),
        "a failure set a session: {:?}",
        r.headers
    );
    assert_eq!(
        cookie_set(r, LOGIN_COOKIE).as_deref(),
        Some(""),
        "the login cookie is cleared"
    );
    assert!(
        !html.contains(&format!("`{check}`")) && !html.contains(&format!(" {check} ")),
        "the page names the check {check}: {html}"
    );
}

/// Waits (polling the login page, within `limit`) until `pred` holds for its HTML.
pub async fn login_page_until(
    gh: &Gatehouse,
    limit: std::time::Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let start = std::time::Instant::now();
    loop {
        let mut c = gh.h1_anon(PUBLIC).await;
        let r = within(QUICK, "login page", c.get("/.gatehouse/login")).await;
        let html = r.text();
        if r.status == 200 && pred(&html) {
            return html;
        }
        assert!(
            start.elapsed() < limit,
            "login page never showed {what} within {limit:?}:\n{html}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
