use http::header;

use gatehouse_core::error::SsoPage;

use super::*;
use crate::web::{ENROL_PATH, LOGIN_PATH, LOGOUT_PATH, TOTP_PATH};

const EVIL: &str = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>&amp;";

#[test]
fn escape_table() {
    let table = [
        ("", ""),
        ("plain text 123", "plain text 123"),
        ("a & b", "a &amp; b"),
        ("<b>", "&lt;b&gt;"),
        ("\"quoted\"", "&quot;quoted&quot;"),
        ("it's", "it&#39;s"),
        ("&amp;", "&amp;amp;"),
        (
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ),
        ("\" onmouseover=\"x", "&quot; onmouseover=&quot;x"),
        ("café ✓", "café ✓"),
        ("a\0b\u{1b}c\u{7f}", "a\u{fffd}b\u{fffd}c\u{fffd}"),
        ("line\nnext\ttab", "line\nnext\ttab"),
    ];
    for (input, want) in table {
        assert_eq!(escape(input), want, "{input:?}");
    }
}

/// What every page must satisfy to work under the CSP and to resist injection.
fn assert_safe(p: &Page) {
    let h = &p.html;
    assert!(h.starts_with("<!doctype html>"), "{h}");
    assert!(h.contains(&format!("<link rel=\"stylesheet\" href=\"{STYLE_PATH}\">")));
    // Every tag is an allowed element with no event handler or style attribute; text
    // between tags can hold anything escaped. Quoted attribute values hold no `"` (escaped),
    // so stripping them leaves only attribute names.
    const TAGS: &[&str] = &[
        "!doctype", "html", "head", "meta", "title", "link", "body", "main", "h1", "p", "form",
        "input", "label", "button", "ul", "li", "a", "code", "strong", "figure", "svg", "rect",
        "path", "details", "summary",
    ];
    let mut rest = h.as_str();
    while let Some(i) = rest.find('<') {
        let tag_end = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..tag_end];
        rest = &rest[tag_end + 1..];
        let tag = tag.trim_start_matches('/').trim_end_matches('/');
        let unquoted: String = tag.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        let mut words = unquoted.split_whitespace();
        let name = words.next().unwrap().to_ascii_lowercase();
        assert!(
            TAGS.contains(&name.as_str()),
            "element {name:?} not allowed: {h}"
        );
        for attr in words {
            let attr = attr.trim_end_matches('=').to_ascii_lowercase();
            assert!(
                !attr.starts_with("on") && attr != "style" && attr != "srcdoc",
                "attribute {attr:?}: {h}"
            );
        }
    }
    assert!(!h.contains("<?xml"));
    let lower = h.to_ascii_lowercase();
    for forbidden in ["javascript:", "<script", "<style"] {
        assert!(
            !lower.contains(forbidden),
            "page contains {forbidden:?}: {h}"
        );
    }
    // No external resource: every href/src/action is one of our paths.
    for attr in ["href=\"", "src=\"", "action=\""] {
        for (i, _) in h.match_indices(attr) {
            let v = &h[i + attr.len()..];
            assert!(
                (v.starts_with('/') && !v.starts_with("//")) || v.starts_with("https://"),
                "{attr}{}",
                &v[..v.len().min(40)]
            );
        }
    }
    // Every form posts and carries a csrf field.
    let forms = h.matches("<form ").count();
    assert_eq!(forms, h.matches("method=\"post\"").count());
    assert_eq!(forms, h.matches("name=\"csrf\"").count());
}

fn all_pages(v: &str) -> Vec<Page> {
    let groups = vec![v.to_string(), "staff".to_string()];
    let apps = vec![
        PortalApp {
            name: v.to_string(),
            url: "https://grafana.example.com:8443/".to_string(),
        },
        PortalApp {
            name: "wiki".to_string(),
            url: "/wiki/".to_string(),
        },
    ];
    vec![
        login(v, Some(v), v, Some(v)),
        login(v, None, "", None),
        totp(v, Some(v)),
        enrol(
            v,
            Some(v),
            "otpauth://totp/Gatehouse:alice?secret=JBSWY3DPEHPK3PXP&issuer=Gatehouse",
            v,
        ),
        portal(v, v, &groups, &apps),
        portal(v, v, &[], &[]),
        denied(v, v),
        unavailable(v, v),
        logged_out(),
        locked_out(15),
        error(StatusCode::NOT_FOUND, v),
        error(StatusCode::BAD_GATEWAY, v),
        sign_in(v, Some(v), v, Some(v), Some(v), &buttons(v)),
        sso_totp(v, Some(v), v, v),
        sso_failure(SsoPage::StartAgain, v),
    ]
}

fn buttons(v: &str) -> Vec<ProviderButton> {
    vec![
        ProviderButton {
            name: v.to_string(),
            href: Some(format!("/.gatehouse/oidc/start?provider={v}")),
        },
        ProviderButton {
            name: "corp".to_string(),
            href: None,
        },
        ProviderButton {
            name: "evil".to_string(),
            href: Some("javascript:alert(1)".to_string()),
        },
    ]
}

#[test]
fn every_page_escapes_hostile_values_and_fits_the_csp() {
    for p in all_pages(EVIL) {
        assert_safe(&p);
        assert!(!p.html.contains("<script>alert"), "{}", p.html);
        assert!(!p.html.contains("<img src=x"), "{}", p.html);
    }
    for p in all_pages("plain") {
        assert_safe(&p);
    }
}

#[test]
fn statuses_and_content() {
    let pages = all_pages("v");
    let statuses: Vec<u16> = pages.iter().map(|p| p.status.as_u16()).collect();
    assert_eq!(
        statuses,
        [
            200, 200, 200, 200, 200, 200, 403, 503, 200, 429, 404, 502, 200, 200, 400
        ]
    );

    let l = login(
        "TOKEN",
        Some("Wrong user name or password."),
        "alice",
        Some("/grafana/?a=1&b=2"),
    );
    assert!(l.html.contains(&format!("action=\"{LOGIN_PATH}\"")));
    assert!(
        l.html
            .contains("<input type=\"hidden\" name=\"csrf\" value=\"TOKEN\">")
    );
    assert!(
        l.html
            .contains("name=\"next\" value=\"/grafana/?a=1&amp;b=2\"")
    );
    assert!(l.html.contains("value=\"alice\""));
    assert!(l.html.contains("type=\"password\""));
    assert!(l.html.contains("Wrong user name or password."));

    assert!(
        totp("T", None)
            .html
            .contains(&format!("action=\"{TOTP_PATH}\""))
    );

    let d = denied("INC-42", "GET wiki.example.com/admin/");
    assert!(d.html.contains("INC-42") && d.html.contains("GET wiki.example.com/admin/"));
    assert!(d.html.contains("ask your manager or the access owner"));

    let u = unavailable("The session store is unreachable.", "req-7");
    assert!(u.html.contains("req-7") && u.html.contains("session store"));

    assert!(locked_out(15).html.contains("15 minutes"));
    assert!(locked_out(1).html.contains("1 minute."));
    assert!(locked_out(0).html.contains("1 minute."));
}

#[test]
fn portal_lists_apps_identity_and_logout_form() {
    let apps = vec![
        PortalApp {
            name: "grafana".into(),
            url: "https://grafana.example.com:8443/".into(),
        },
        PortalApp {
            name: "evil".into(),
            url: "javascript:alert(1)".into(),
        },
        PortalApp {
            name: "relative".into(),
            url: "//evil.com/".into(),
        },
    ];
    let p = portal("CSRF", "alice", &["staff".into(), "sre".into()], &apps);
    assert!(
        p.html
            .contains("<a href=\"https://grafana.example.com:8443/\">grafana</a>")
    );
    assert!(p.html.contains("<li>evil</li>") && p.html.contains("<li>relative</li>"));
    assert!(p.html.contains("<strong>alice</strong>") && p.html.contains("staff, sre"));
    assert!(
        p.html
            .contains(&format!("<form method=\"post\" action=\"{LOGOUT_PATH}\">"))
    );
    assert!(
        portal("c", "bob", &[], &[])
            .html
            .contains("No application is open to you")
    );
}

#[test]
fn enrolment_shows_qr_grouped_secret_and_uri() {
    let uri = "otpauth://totp/Gatehouse:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DP&issuer=Gatehouse";
    let p = enrol("C", None, uri, "JBSWY3DPEHPK3PXPJBSWY3DP");
    assert!(
        p.html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\"") || p.html.contains("<svg")
    );
    assert!(!p.html.contains("<?xml"));
    assert!(p.html.contains("JBSW Y3DP EHPK 3PXP JBSW Y3DP"));
    assert!(p.html.contains(
        "otpauth://totp/Gatehouse:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DP&amp;issuer=Gatehouse"
    ));
    assert!(p.html.contains(&format!("action=\"{ENROL_PATH}\"")));
    assert_eq!(group_secret("ABCDEFGHIJ"), "ABCD EFGH IJ");
    assert_eq!(group_secret("AB CD"), "ABCD");
    assert_eq!(group_secret(""), "");
    // Too long for any QR version: the page still renders, without the QR.
    let huge = format!("otpauth://totp/x?secret={}", "A".repeat(8000));
    let p = enrol("C", None, &huge, "ABCD");
    assert!(!p.html.contains("<svg") && p.html.contains("could not be drawn"));
}

#[test]
fn qr_svg_is_inline_svg_without_style_or_script() {
    let svg = qr_svg("otpauth://totp/Gatehouse:alice?secret=JBSWY3DPEHPK3PXP").unwrap();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert!(!svg.contains("style") && !svg.contains("script"));
    assert!(qr_svg(&"A".repeat(8000)).is_err());
}

#[test]
fn headers_and_stylesheet() {
    assert_eq!(
        CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let h = security_headers();
    assert!(
        h.iter()
            .any(|(n, v)| n == header::CONTENT_SECURITY_POLICY && v == CONTENT_SECURITY_POLICY)
    );
    assert!(
        h.iter()
            .any(|(n, v)| n == header::CACHE_CONTROL && v == "no-store")
    );
    assert!(
        h.iter()
            .any(|(n, v)| n == header::X_CONTENT_TYPE_OPTIONS && v == "nosniff")
    );
    assert!(
        h.iter()
            .any(|(n, v)| n == header::STRICT_TRANSPORT_SECURITY && v == HSTS)
    );
    assert!(
        asset_headers("text/css; charset=utf-8")
            .iter()
            .any(|(n, v)| n == header::CONTENT_TYPE && v == "text/css; charset=utf-8")
    );
    assert!(STYLE_CSS.contains(".card"));
    // The stylesheet loads nothing from elsewhere.
    assert!(!STYLE_CSS.contains("url(") && !STYLE_CSS.contains("@import"));
}

#[test]
fn pages_posting_to_another_origin_keep_their_origin_header() {
    // Under `same-origin`, a browser posts a cross-origin form with `Origin: null`, which
    // the app host's handoff refuses: these pages send the origin alone instead.
    for p in [
        handoff("https://wiki.example/.gatehouse/handoff", "T", "/"),
        provider_logout("https://idp.example/logout", &[]),
    ] {
        assert!(
            p.html
                .contains("<meta name=\"referrer\" content=\"strict-origin\">"),
            "{}",
            p.html
        );
    }
    assert!(
        login("c", None, "", None)
            .html
            .contains("content=\"same-origin\"")
    );
    let h = cross_origin_form_headers("https://wiki.example").unwrap();
    assert!(
        h.iter()
            .any(|(n, v)| n == header::REFERRER_POLICY && v == "strict-origin")
    );
    assert!(h.iter().any(|(n, v)| {
        n == header::CONTENT_SECURITY_POLICY
            && v.to_str()
                .unwrap()
                .contains("form-action https://wiki.example;")
    }));
}

#[test]
fn handoff_csp_only_widens_script_and_form_action() {
    let csp = handoff_csp("https://app.example:8443");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        csp.contains("form-action https://app.example:8443;"),
        "{csp}"
    );
    for kept in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(kept), "{csp} lacks {kept}");
    }
}

#[test]
fn error_page_names_the_status_and_request_id() {
    let p = error(StatusCode::NOT_FOUND, "abc<");
    assert_eq!(p.status, 404);
    assert!(p.html.contains("404 Not Found"), "{}", p.html);
    assert!(
        p.html
            .contains("Request id: <code class=\"request-id\">abc&lt;</code>")
    );
}

#[test]
fn raw_error_is_a_complete_response_with_security_headers() {
    let raw = String::from_utf8(raw_error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    for line in [
        "content-type: text/html; charset=utf-8",
        "strict-transport-security: max-age=63072000; includeSubDomains",
        "x-content-type-options: nosniff",
        "x-frame-options: DENY",
        "connection: close",
    ] {
        assert!(head.contains(line), "{head} lacks {line}");
    }
    assert!(head.contains(&format!("content-length: {}", body.len())));
    assert!(body.contains("Request id: <code class=\"request-id\">conn-"));
}

#[test]
fn the_login_page_offers_each_provider_beside_the_local_form() {
    let p = sign_in("C", None, "", None, None, &buttons("okta"));
    let h = &p.html;
    let (providers, local) = h.split_once("<form ").unwrap();
    assert!(
        providers.contains(
            "<a class=\"button provider\" href=\"/.gatehouse/oidc/start?provider=okta\">Sign in with okta</a>"
        ),
        "{h}"
    );
    // Unavailable: a disabled button that says so, and no link.
    assert!(
        providers.contains(
            "disabled>Sign in with corp <strong class=\"status\">— unavailable</strong></button>"
        ),
        "{h}"
    );
    // A link that is neither a path nor https is not a link.
    assert!(!h.contains("javascript:"), "{h}");
    assert!(providers.contains("or with a Gatehouse account"));
    assert!(local.contains("type=\"password\""));
    // Without providers the page is the plain login form.
    assert_eq!(
        sign_in("C", None, "", None, None, &[]),
        login("C", None, "", None)
    );
}

#[test]
fn sso_failures_show_a_fixed_message_and_the_request_id() {
    let kinds = [
        (SsoPage::ProviderUnavailable, 503, "cannot be reached"),
        (SsoPage::Declined, 403, "cancelled or refused"),
        (SsoPage::StartAgain, 400, "another browser"),
        (SsoPage::NameTaken, 403, "another Gatehouse account"),
        (SsoPage::Locked, 403, "locked"),
        (SsoPage::Failed, 401, "could not be verified"),
        (SsoPage::Internal, 503, "internal error"),
    ];
    for (kind, status, says) in kinds {
        let p = sso_failure(kind, "req-9");
        assert_eq!(p.status.as_u16(), status, "{kind:?}");
        assert!(p.html.contains(says), "{kind:?}: {}", p.html);
        assert!(p.html.contains("<code class=\"request-id\">req-9</code>"));
        assert!(p.html.contains(&format!("href=\"{LOGIN_PATH}\"")));
        assert_safe(&p);
    }
    let t = sso_totp("C", None, "alice", "corp");
    assert!(
        t.html
            .contains("<strong>corp</strong> as <strong>alice</strong>")
    );
    assert!(t.html.contains(&format!("action=\"{TOTP_PATH}\"")));
}

#[test]
fn the_provider_logout_posts_the_id_token_instead_of_putting_it_in_a_url() {
    let fields = vec![
        ("id_token_hint".to_string(), "eyJ.a\"b.c".to_string()),
        ("client_id".to_string(), "gatehouse".to_string()),
    ];
    let p = provider_logout("https://idp.example/logout", &fields);
    let h = &p.html;
    assert!(
        h.contains("<form id=\"handoff\" method=\"post\" action=\"https://idp.example/logout\">")
    );
    assert!(h.contains("name=\"id_token_hint\" value=\"eyJ.a&quot;b.c\""));
    assert!(h.contains(&format!(
        "<script src=\"{}\"></script>",
        crate::web::HANDOFF_JS_PATH
    )));
    assert!(!h.contains("?id_token_hint"));
}
