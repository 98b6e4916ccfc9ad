//! Which CDS client a secret belongs to: [`ClientRef`], its [`ClientKind`], and the
//! [`SecretId`] CDS gives each of its secrets.
//!
//! Not here: talking to CDS (that is `connect`), or the policy's view of a client (its
//! name, store and schedule, in `policy`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id CDS gives a secret: an integer, auto-incremented per client.
pub type SecretId = i32;

/// The kinds of client that have secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Server-to-server clients (`ClientCredentialClients`).
    ClientCredentials,
    /// Browser login plus server side (`HybridClients`).
    Hybrid,
}

impl ClientKind {
    /// The collection segment of the API path for this kind.
    pub fn path_segment(self) -> &'static str {
        match self {
            ClientKind::ClientCredentials => "ClientCredentialClients",
            ClientKind::Hybrid => "HybridClients",
        }
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientKind::ClientCredentials => "client_credentials",
            ClientKind::Hybrid => "hybrid",
        })
    }
}

/// One CDS client whose secrets are managed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientRef {
    /// The tenant (GUID).
    pub tenant_id: String,
    /// The client (GUID).
    pub client_id: String,
    /// Which collection the client lives in.
    pub kind: ClientKind,
}
