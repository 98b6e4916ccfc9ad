//! The `coordination:` section as the policy declares it, once validated: which service
//! holds the leader lease and how to reach it.
//!
//! Not here: checking what the policy wrote (`check`), or talking to the service
//! (`etcd`, `kubernetes`).

use std::path::PathBuf;

use crate::domain::ValueSource;
use crate::domain::service_url::ServiceUrl;

/// The `coordination:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinationSpec {
    /// etcd, or a Kubernetes Lease.
    pub kind: CoordinationKind,
    /// etcd URLs without a trailing `/` (https, or http to loopback only).
    pub endpoints: Vec<ServiceUrl>,
    /// The prefix of the leader key (`<key_prefix>/leader`), without a trailing `/`.
    pub key_prefix: String,
    /// How long the lease outlives the last renewal.
    pub lease_ttl: std::time::Duration,
    /// Where the etcd user name comes from, if etcd wants one.
    pub username: Option<ValueSource>,
    /// Where the etcd password comes from, if etcd wants one.
    pub password: Option<ValueSource>,
    /// A CA file that signed etcd's certificate.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for etcd's client certificate auth.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Which service holds the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinationKind {
    /// etcd (`endpoints`, `key_prefix`).
    Etcd,
    /// A `coordination.k8s.io/v1` Lease.
    KubernetesLease {
        /// Its namespace; `None`: the pod's.
        namespace: Option<String>,
        /// Its name.
        name: String,
        /// The API server; `None`: the in-cluster service.
        api_url: Option<ServiceUrl>,
        /// The bearer token file; `None`: the pod's service account token.
        token_file: Option<PathBuf>,
    },
}
