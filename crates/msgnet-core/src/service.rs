//! The vocabulary shared by sans-IO message services and the drivers that run them: the
//! answer to an inbound request, the kind of an output, and what became of it.
//!
//! A *service* is a protocol state machine that sees messages only (Kademlia, PubSub,
//! ...). Two drivers run services: `msgnet::service` on a real `Host`, and `msgnet-sim`
//! on simulated nodes. Each has its own `Service` trait and `Output` type, because
//! addresses differ (multiaddrs on a host, socket addresses in the simulator); the types
//! here are the same for both.

use bytes::Bytes;

use crate::SendError;

/// The answer to an inbound request: the response payload, or an error code and reason
/// (see `Endpoint::respond`).
pub type Reply = Result<Bytes, (u8, String)>;

/// Whether a service's output is a one-way message or a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A one-way message (`send`): the outcome is [`Outcome::Sent`].
    Message,
    /// A request (`request`): the outcome is [`Outcome::Response`].
    Request,
}

/// What became of a service's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A one-way message was acknowledged or failed.
    Sent(Result<(), SendError>),
    /// A request was answered or failed.
    Response(Result<Bytes, SendError>),
}

impl Outcome {
    /// The response of an answered request, or an empty payload for an acknowledged
    /// message; `None` if the output failed.
    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            Outcome::Response(Ok(bytes)) => Some(bytes),
            Outcome::Sent(Ok(())) => Some(&[]),
            Outcome::Response(Err(_)) | Outcome::Sent(Err(_)) => None,
        }
    }
}
