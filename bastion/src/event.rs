//! What the russh handler tells the connection task: one event per callback that needs a
//! decision or work. Authentication events carry a oneshot for the answer russh waits for;
//! channel opens carry russh's open handle (accepted or refused by the task, or refused when
//! dropped).

use gatehouse_core::audit::SshRefusal;
use russh::Channel;
use russh::keys::{Algorithm, PublicKey};
use russh::server::{self, Auth, ChannelOpenHandle, Msg};
use tokio::sync::oneshot;

/// Events queued from the handler to its connection task. The handler waits when the queue
/// is full, which stops russh reading from that client: nothing is dropped, and one
/// connection's burst costs only that connection.
pub(crate) const EVENT_QUEUE: usize = 16;

/// A response to the second-factor prompt: the first answer, and whether there were more.
pub(crate) struct TotpResponse {
    pub first: String,
    pub extra: bool,
}

/// A direct-tcpip (`ssh -L`) request.
pub(crate) struct ForwardRequest {
    pub host: String,
    pub port: u32,
    pub orig_host: String,
    pub orig_port: u32,
}

pub(crate) enum Event {
    /// A public key for the SSH user `name`: only offered (may it sign?), or `signed` (its
    /// signature verified by russh).
    Key {
        name: String,
        key: PublicKey,
        algorithm: Algorithm,
        signed: bool,
        reply: oneshot::Sender<Auth>,
    },
    /// A keyboard-interactive step for `name`: `None` asks for the prompt.
    Totp {
        name: String,
        response: Option<TotpResponse>,
        reply: oneshot::Sender<Auth>,
    },
    /// A session channel to accept (or refuse) and run.
    OpenSession {
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        handle: server::Handle,
    },
    /// A local forward to accept (or refuse) and run.
    OpenForward {
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        request: ForwardRequest,
    },
    /// Something the bastion refused outright (already answered): to audit.
    Refused(SshRefusal),
}
