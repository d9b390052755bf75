//! SSO's view of the one outbound client ([`crate::outbound::HttpClient`]): the limits of a
//! provider call and the adapter openidconnect calls through.
//!
//! Threat: a provider (or whoever sits between) that hangs, streams without end, redirects
//! elsewhere or downgrades to plain http. Mitigation: the outbound client's (one deadline per
//! call, connect included; capped body; no redirects; https only, plain http to loopback
//! only for a loopback issuer; the provider's `ca_file` or the web roots), with the limits
//! below.

use std::time::Duration;

use crate::error::OutboundError;
use crate::outbound::HttpClient;

/// Deadline for one provider call, from connecting to the last body byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read (discovery documents and key sets are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024;

/// A boxed, `Send` response future.
type HttpFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<http::Response<Vec<u8>>, OutboundError>>
            + Send
            + 'a,
    >,
>;

/// openidconnect's view of a provider's [`HttpClient`].
pub(super) struct Adapter<'a>(pub(super) &'a HttpClient);

impl<'c> openidconnect::AsyncHttpClient<'c> for Adapter<'_> {
    type Error = OutboundError;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(self.0.execute(request, REQUEST_TIMEOUT, MAX_RESPONSE_BYTES))
    }
}
