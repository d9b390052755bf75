//! The callback parser and messages. The flow itself is tested against a real provider and
//! a hostile one in the workspace's end-to-end tests (`tests/oidc*.rs`).

use super::callback::MAX_CALLBACK_VALUE;
use super::*;

#[test]
fn callback_query_is_read_strictly() {
    let cb = SsoCallback::from_query("state=abc&code=xyz&iss=https%3A%2F%2Fidp&other=1");
    assert_eq!(cb.state.as_deref(), Some("abc"));
    assert_eq!(cb.code.as_deref(), Some("xyz"));
    assert_eq!(cb.iss.as_deref(), Some("https://idp"));
    assert!(cb.error.is_none());
    let dbg = format!("{cb:?}");
    assert!(!dbg.contains("xyz") && !dbg.contains("abc"), "{dbg}");
    // A repeated state or code is no state or code at all.
    let cb = SsoCallback::from_query("state=a&state=b&code=c&code=d");
    assert!(cb.state.is_none() && cb.code.is_none());
    let cb = SsoCallback::from_query(&format!("state={}", "x".repeat(MAX_CALLBACK_VALUE + 1)));
    assert!(cb.state.is_none());
    let cb = SsoCallback::from_query("error=access_denied&error_description=User%20said%20no");
    assert_eq!(cb.error.as_deref(), Some("access_denied"));
}

#[test]
fn provider_errors_are_bounded_and_printable() {
    let e = provider_error("access_denied\n", Some(&"x\u{7}".repeat(500)));
    assert!(e.starts_with("the provider answered `access_denied`"));
    assert!(!e.contains('\n') && !e.contains('\u{7}'));
    assert!(e.len() < 300);
}

#[test]
fn logout_hints_hide_the_token() {
    let h = SsoLogoutHint {
        provider: "corp".into(),
        id_token: "eyJsecret".into(),
    };
    assert!(!format!("{h:?}").contains("eyJ"));
}
