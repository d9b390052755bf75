//! Channel tasks, one per channel the client opens on an authenticated connection: session
//! channels (shell, exec, SCP, SFTP) and local forwards. Each asks [`Conn::authorize`] for
//! core's permit before anything reaches the target.
//!
//! [`Conn::authorize`]: crate::conn::Conn::authorize

pub(crate) mod forward;
mod observer;
mod relay;
mod request;
pub(crate) mod session;

pub(crate) use request::env_allowed;
