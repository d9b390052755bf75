//! Identity helpers over the real binary: users made with `gatehouse user add` (password on
//! stdin, TOTP secret read from the printed `otpauth://` URI), codes computed with totp-rs,
//! the real login flow (GET form -> POST with the login cookie and CSRF token), the audit log
//! read back as JSON, and the identity assertion verified against the published JWKS.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use totp_rs::{Algorithm, Builder, Secret, Totp};

use super::client::{H1, H1Conn, Resp, full};
use super::gatehouse::{Gatehouse, GatehouseSpec, TEST_GROUP, TEST_USER};
use super::{QUICK, within};

pub const SESSION_COOKIE: &str = "__Host-gatehouse";
pub const LOGIN_COOKIE: &str = "__Host-gatehouse-login";
pub const LOGIN_PATH: &str = "/.gatehouse/login";
pub const LOGOUT_PATH: &str = "/.gatehouse/logout";
pub const PORTAL_PATH: &str = "/.gatehouse/";
pub const JWKS_PATH: &str = "/.gatehouse/jwks.json";
/// The public host of the test config (`public_url = "https://gatehouse.localhost"`).
pub const PUBLIC_HOST: &str = "gatehouse.localhost";
pub const ISSUER: &str = "https://gatehouse.localhost";

/// A local user made through the CLI.
pub struct TestUser {
    pub name: String,
    pub password: String,
    pub groups: Vec<String>,
    pub otpauth: String,
    pub totp: Totp,
}

impl std::fmt::Debug for TestUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestUser({})", self.name)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl TestUser {
    /// The code for the current 30 s step.
    pub fn code(&self) -> String {
        self.code_at(unix_now())
    }

    pub fn code_at(&self, unix: u64) -> String {
        self.totp.generate(unix).to_string()
    }

    /// A six-digit code that is wrong now and in the neighbouring steps.
    pub fn wrong_code(&self) -> String {
        let now = unix_now();
        let taken: Vec<String> = [now - 60, now - 30, now, now + 30, now + 60]
            .iter()
            .map(|t| self.code_at(*t))
            .collect();
        (0..1_000_000u32)
            .map(|n| format!("{:06}", (n * 7919 + 123_457) % 1_000_000))
            .find(|c| !taken.contains(c))
            .unwrap()
    }
}

/// A strong random password (never containing a user name).
pub fn random_password() -> String {
    let mut b = [0u8; 12];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("Pw-{hex}-Zq9")
}

/// Waits (on the clock, which is what TOTP is about) until at least `min_left` seconds remain
/// in the current 30 s step, so a test's codes all belong to one step.
pub async fn fresh_totp_window(min_left: u64) {
    let left = 30 - unix_now() % 30;
    if left < min_left {
        tokio::time::sleep(Duration::from_millis(left * 1000 + 200)).await;
    }
}

/// Seconds left in the current step.
pub fn totp_seconds_left() -> u64 {
    30 - unix_now() % 30
}

/// A TOTP generator for a base32 secret: SHA1, 6 digits, 30 s (the product's parameters).
pub fn totp_from_base32(secret: &str) -> Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(
            Secret::try_from_base32(secret)
                .unwrap_or_else(|e| panic!("TOTP secret is not base32: {e:?}")),
        )
        .build_noncompliant()
}

/// The `secret=` of the first `otpauth://` URI in `text`.
pub fn otpauth_in(text: &str) -> Option<(String, String)> {
    let start = text.find("otpauth://")?;
    let uri: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
        .collect();
    let query = uri.split_once('?')?.1;
    let secret = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))?
        .to_string();
    Some((uri, secret))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value `name=VALUE` set by a `Set-Cookie` header of `r` (empty for a deletion).
pub fn set_cookie(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (n, rest) = v.split_once('=')?;
            (n.trim() == name).then(|| rest.split(';').next().unwrap_or("").trim().to_string())
        })
}

/// The whole `Set-Cookie` header line for cookie `name`.
pub fn set_cookie_line(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.split_once('=').is_some_and(|(n, _)| n.trim() == name))
        .map(str::to_string)
}

/// The value of `<input type="hidden" name="csrf" value="...">` in a page.
pub fn csrf_in(html: &str) -> Option<String> {
    hidden_field(html, "csrf")
}

/// The value of the hidden field `name` in a page.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let i = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..i].rfind('<')?;
    let tag_end = i + html[i..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + 7;
    let end = tag[v..].find('"')?;
    Some(tag[v..v + end].to_string())
}

/// A login form as served: its login-transaction cookie and CSRF token.
#[derive(Debug)]
pub struct LoginForm {
    /// `__Host-gatehouse-login=VALUE`
    pub login_cookie: String,
    pub csrf: String,
    pub page: Resp,
}

/// `__Host-gatehouse=VALUE`
pub fn session_pair(value: &str) -> String {
    format!("{SESSION_COOKIE}={value}")
}

impl Gatehouse {
    /// `gatehouse user add NAME --groups G --password-stdin`; the TOTP secret is read from
    /// the printed otpauth URI.
    pub async fn create_user(&self, name: &str, groups: &[&str]) -> TestUser {
        let password = random_password();
        let mut args = vec!["user", "add", name, "--password-stdin"];
        let joined = groups.join(",");
        if !groups.is_empty() {
            args.push("--groups");
            args.push(&joined);
        }
        let out = tokio::task::block_in_place(|| self.cli(&args, Some(&format!("{password}\n"))));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "gatehouse user add {name} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let (otpauth, secret) = otpauth_in(&stdout).unwrap_or_else(|| {
            panic!("no otpauth://...secret=... in `user add` output:\n{stdout}")
        });
        TestUser {
            name: name.to_string(),
            password,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            totp: totp_from_base32(&secret),
            otpauth,
        }
    }

    /// `GET /.gatehouse/login[?next=...]` on `host`: must be 200 with a login cookie and a
    /// CSRF field.
    pub async fn login_form(&self, host: &str, next: Option<&str>) -> LoginForm {
        let mut c = self.h1_anon(host).await;
        let path = match next {
            Some(n) => format!("{LOGIN_PATH}?next={}", urlencode(n)),
            None => LOGIN_PATH.to_string(),
        };
        let req = c.request(
            "GET",
            &path,
            &[("accept", "text/html")],
            super::client::empty(),
        );
        let page = within(QUICK, "GET login form", c.send(req)).await;
        assert_eq!(
            page.status,
            200,
            "GET {path} on {host}: {} {}",
            page.status,
            page.text()
        );
        let value = set_cookie(&page, LOGIN_COOKIE).unwrap_or_else(|| {
            panic!(
                "login form sets no {LOGIN_COOKIE} cookie; headers {:?}",
                page.headers
            )
        });
        let csrf = csrf_in(&page.text())
            .unwrap_or_else(|| panic!("login form has no csrf field:\n{}", page.text()));
        LoginForm {
            login_cookie: format!("{LOGIN_COOKIE}={value}"),
            csrf,
            page,
        }
    }

    /// POSTs `body` (urlencoded) to the login path of `host` with `cookie` (or none).
    pub async fn post_form(
        &self,
        host: &str,
        path: &str,
        cookie: Option<&str>,
        body: String,
    ) -> Resp {
        let mut c = self.h1_anon(host).await;
        let mut extra = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(ck) = cookie {
            extra.push(("cookie", ck));
        }
        let req = c.request("POST", path, &extra, full(body));
        within(QUICK, "POST form", c.send(req)).await
    }

    /// The whole flow with the given code: form, then POST. Returns the POST's response.
    pub async fn try_login(
        &self,
        host: &str,
        user: &TestUser,
        password: &str,
        code: &str,
        next: Option<&str>,
    ) -> Resp {
        let f = self.login_form(host, next).await;
        let mut fields = vec![
            ("csrf", f.csrf.as_str()),
            ("user", user.name.as_str()),
            ("password", password),
            ("code", code),
        ];
        if let Some(n) = next {
            fields.push(("next", n));
        }
        self.post_form(host, LOGIN_PATH, Some(&f.login_cookie), form(&fields))
            .await
    }

    /// Logs `user` in on `host` with the current code: asserts the 303 and returns the
    /// session cookie as `__Host-gatehouse=VALUE`.
    pub async fn login(&self, host: &str, user: &TestUser) -> String {
        // A code in the last second of its step could reach the server in the next one.
        fresh_totp_window(2).await;
        let r = self
            .try_login(host, user, &user.password, &user.code(), None)
            .await;
        assert_eq!(
            r.status,
            303,
            "login of {} on {host}: {} {:?}\n{}",
            user.name,
            r.status,
            r.headers,
            r.text()
        );
        let value = set_cookie(&r, SESSION_COOKIE).unwrap_or_else(|| {
            panic!(
                "successful login sets no {SESSION_COOKIE} cookie: {:?}",
                r.headers
            )
        });
        assert!(!value.is_empty(), "login set an empty session cookie");
        session_pair(&value)
    }

    /// Starts the gateway, creates [`TEST_USER`] in [`TEST_GROUP`], logs in (on the first
    /// app's host, else the public host) and makes h1/h2 carry the session cookie.
    pub async fn start_signed_in(spec: GatehouseSpec) -> Gatehouse {
        let login_host = spec
            .apps
            .first()
            .map_or_else(|| PUBLIC_HOST.to_string(), |a| a.host.clone());
        let gh = Gatehouse::start(spec).await;
        let user = gh.create_user(TEST_USER, &[TEST_GROUP]).await;
        let cookie = gh.login(&login_host, &user).await;
        gh.use_cookie(Some(cookie));
        gh
    }

    /// Every audit event written so far (the `event` object of each JSON line), oldest first.
    pub fn audit_events(&self) -> Vec<Value> {
        audit_events_in(&self.dir.join(&self.spec.audit_dir))
    }

    /// Waits (polling the files, deadline QUICK) for an audit event of kind `kind` matching
    /// `pred`; fails the test with the events seen.
    pub async fn expect_audit(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let events = self.audit_events();
            if let Some(e) = events
                .iter()
                .find(|e| e["event"].as_str() == Some(kind) && pred(e))
            {
                return e.clone();
            }
            if start.elapsed() > QUICK {
                panic!("no matching `{kind}` audit event within {QUICK:?}; events: {events:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Number of audit events of kind `kind` matching `pred`.
    pub fn count_audit(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> usize {
        self.audit_events()
            .iter()
            .filter(|e| e["event"].as_str() == Some(kind) && pred(e))
            .count()
    }

    /// Waits (deadline QUICK) until a line of the process's stderr satisfies `pred`: log lines
    /// are written after the response, so they may arrive a moment later.
    pub async fn expect_log_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while !self.stderr().lines().any(&pred) {
            assert!(
                start.elapsed() < QUICK,
                "no log line with {what} within {QUICK:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /.gatehouse/jwks.json` on the public host.
    pub async fn jwks(&self) -> Value {
        let mut c = self.h1_anon(PUBLIC_HOST).await;
        let r = within(QUICK, "jwks", c.get(JWKS_PATH)).await;
        assert_eq!(r.status, 200, "GET {JWKS_PATH}: {}", r.text());
        r.json()
    }
}

/// An HTTP/1.1 connection to `gh` on `host` carrying `cookie` (`name=value`).
pub async fn h1_with(gh: &Gatehouse, host: &str, cookie: &str) -> H1Conn {
    H1Conn::connect(gh.gateway, host, gh.client_config(&[H1]))
        .await
        .with_cookie(Some(cookie.to_string()))
}

/// Verifies an ES256 assertion against the JWKS's x/y only; returns its claims.
pub fn verify_assertion(token: &str, jwks: &Value, audience: &str) -> Value {
    use jsonwebtoken::{Algorithm as JwtAlg, DecodingKey, Validation, decode, decode_header};
    let header = decode_header(token).unwrap_or_else(|e| panic!("assertion header: {e}"));
    assert_eq!(header.alg, JwtAlg::ES256, "assertion alg");
    let keys = jwks["keys"].as_array().expect("jwks has keys");
    let key = keys
        .iter()
        .find(|k| header.kid.is_none() || k["kid"].as_str() == header.kid.as_deref())
        .unwrap_or_else(|| panic!("no JWKS key for kid {:?} in {jwks}", header.kid));
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    let dk =
        DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap())
            .expect("JWKS x/y form a P-256 key");
    let mut v = Validation::new(JwtAlg::ES256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[audience]);
    v.leeway = 5;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = decode::<Value>(token, &dk, &v)
        .unwrap_or_else(|e| panic!("assertion does not verify against the JWKS: {e:?}"));
    data.claims
}

pub use gatehouse_testkit::audit::audit_events_in;
