//! Authentication seam.
//!
//! Threat: a request reaching authorization or an upstream without anyone having established
//! who sent it. Mitigation: [`Authenticated`] has private fields and is made only here; the
//! authorizer takes it as an argument. (Sessions, SSO and TOTP land here next; for now every
//! request is an anonymous identity.)

use http::request::Parts;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// No credentials were presented.
    Anonymous,
}

/// Proof that authentication ran for this request.
#[derive(Debug)]
pub struct Authenticated {
    subject: Subject,
}

impl Authenticated {
    pub fn subject(&self) -> &Subject {
        &self.subject
    }
}

/// Authentication failed; the request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {}

/// Establishes who sent the request.
pub fn authenticate(_parts: &Parts) -> Result<Authenticated, AuthnError> {
    Ok(Authenticated {
        subject: Subject::Anonymous,
    })
}
