//! The life of a new secret as types: [`Created`] → [`Verified`] → [`Published`] or
//! [`InDoubt`]. Only a secret that nobody was handed can be deleted again, so only
//! `Created` and `Verified` have [`Undo`] (the one thing the reconciler's undo takes):
//! "never delete a published or in-doubt secret" (I1, I3) is checked by the compiler.
//! The value lives only in `Created` and `Verified` and is zeroized when they go.
//!
//! Not here: creating the secret (the lost-create search by run id is the reconciler's
//! `create`), deleting it (the reconciler's `undo_create`, which audits it), and what a
//! failure means for the pass (`StepError`).

use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tracing::info;

use crate::connect::{ConnectApi, ConnectError, CreatedSecret};
use crate::domain::{Fingerprint, SecretId, StoreRecord};
use crate::stop::Stop;
use crate::store::{SecretStore, StoreError};
use crate::writes::Writes;

/// How often verify asks again while CDS does not accept a new secret yet. Fixed and
/// short, so a pass ends soon after the secret has propagated: a doubling backoff
/// overshot the propagation delay by up to 2×, with the client's slot held all along.
const VERIFY_POLL: StdDuration = StdDuration::from_millis(250);

/// The longest wait between verify's tries after throttling or a server error (the
/// CDS client already honoured `Retry-After` and backed off within each request).
const VERIFY_BACKOFF_MAX: StdDuration = StdDuration::from_secs(15);

/// How long a publish under way may still take once a stop came (the rest of the
/// 10 seconds a stop may take is for undoing and reporting).
const PUBLISH_STOP_GRACE: StdDuration = StdDuration::from_secs(5);

/// What every state knows about the new secret (never its value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Its id in CDS.
    pub id: SecretId,
    /// Its value's fingerprint.
    pub fingerprint: Fingerprint,
    /// When it expires.
    pub expiration: DateTime<Utc>,
}

/// A secret just created in CDS; nobody holds its value yet.
pub struct Created {
    facts: Facts,
    value: SecretString,
}

/// A created secret that got a token: it works, and nobody holds it yet.
pub struct Verified {
    facts: Facts,
    value: SecretString,
}

/// A secret the store now holds as its current one: consumers may read it. It cannot
/// be undone, and its value is gone from memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    facts: Facts,
}

/// A secret whose publish may have landed or may still land: readers may hold it, so
/// it is never undone (a later pass finds it by its marker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InDoubt {
    facts: Facts,
}

/// Leave to delete a new secret again: only a [`Created`] or a [`Verified`] one gives it.
#[derive(Debug, PartialEq, Eq)]
pub struct Undo {
    id: SecretId,
}

impl Undo {
    /// The secret to delete.
    pub fn id(&self) -> SecretId {
        self.id
    }
}

/// How a publish ended.
pub enum Publish {
    /// The store holds it.
    Published(Published),
    /// The answer was lost: the write may still land.
    InDoubt(InDoubt, StoreError),
    /// Given up at a stop before its answer came: the write may have landed.
    GivenUp(InDoubt),
    /// Refused, with nothing written: it may be undone (unless the lease is lost).
    Failed(Verified, StoreError),
}

impl Created {
    /// The new secret CDS answered with; `now` stands in for an expiration CDS did not
    /// say (it always does for a secret the rotator creates).
    pub fn new(created: CreatedSecret, now: DateTime<Utc>) -> Created {
        let fingerprint = Fingerprint::of(&created.value);
        Created {
            facts: Facts {
                id: created.secret.id,
                fingerprint,
                expiration: created.secret.expiration.unwrap_or(now),
            },
            value: created.value,
        }
    }

    /// What is known about it.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Its value (to keep it out of children's output, see `command::hold`).
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// Tries to get a token with it until that works or `timeout` passes (CDS may take
    /// a moment to accept a new secret): every [`VERIFY_POLL`] while the secret is
    /// refused, backing off (doubling) while CDS throttles or fails. A stop ends the
    /// wait. On failure it comes back with the last error, to be undone.
    pub async fn verify(
        self,
        connect: &dyn ConnectApi,
        client_id: &str,
        timeout: StdDuration,
        stop: &Stop,
    ) -> Result<Verified, (Created, ConnectError)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = VERIFY_POLL;
        loop {
            let e = match connect.verify_secret(client_id, &self.value).await {
                Ok(()) => {
                    return Ok(Verified {
                        facts: self.facts,
                        value: self.value,
                    });
                }
                Err(e) => e,
            };
            let wait = match e {
                ConnectError::Unauthenticated { .. } => VERIFY_POLL,
                _ => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(VERIFY_BACKOFF_MAX);
                    wait
                }
            };
            // Stopping: give up waiting; the caller deletes the new secret.
            if !retry_verify(&e) || stop.is_set() || tokio::time::Instant::now() + wait >= deadline
            {
                return Err((self, e));
            }
            info!(step = "verify", error = %e, wait_ms = wait.as_millis() as u64, "not accepted yet; trying again");
            stop.sleep(wait).await;
        }
    }

    /// Gives it up to be deleted: nobody was handed its value.
    pub fn undo(self) -> Undo {
        Undo { id: self.facts.id }
    }
}

impl Verified {
    /// What is known about it.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Writes it to `store` under `key` with `record`, through `writes`. A publish under
    /// way when a stop comes gets [`PUBLISH_STOP_GRACE`] to end; one still settling a
    /// lost answer then is given up, and in doubt like any other.
    pub async fn publish(
        self,
        store: &dyn SecretStore,
        writes: &Writes,
        key: &str,
        record: &StoreRecord,
        stop: &Stop,
    ) -> Publish {
        let given_up = async {
            stop.wait().await;
            tokio::time::sleep(PUBLISH_STOP_GRACE).await;
        };
        let published = tokio::select! {
            biased;
            published = store.publish_through(writes, key, &self.value, record) => Some(published),
            () = given_up => None,
        };
        match published {
            None => Publish::GivenUp(InDoubt { facts: self.facts }),
            Some(Ok(())) => Publish::Published(Published { facts: self.facts }),
            Some(Err(e @ StoreError::OutcomeUnknown { .. })) => {
                Publish::InDoubt(InDoubt { facts: self.facts }, e)
            }
            Some(Err(e)) => Publish::Failed(self, e),
        }
    }

    /// Gives it up to be deleted: nobody was handed its value.
    pub fn undo(self) -> Undo {
        Undo { id: self.facts.id }
    }
}

impl Published {
    /// What is known about it.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }
}

impl InDoubt {
    /// What is known about it.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }
}

/// Whether a failed token request with a new secret is worth trying again.
fn retry_verify(e: &ConnectError) -> bool {
    match e {
        ConnectError::Unauthenticated { .. } | ConnectError::Transport { .. } => true,
        ConnectError::Api { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ClientSecret;

    fn created(id: SecretId) -> Created {
        Created::new(
            CreatedSecret {
                secret: ClientSecret {
                    id,
                    description: None,
                    expiration: None,
                    expires: Some(true),
                },
                value: SecretString::from("v".to_owned()),
            },
            DateTime::<Utc>::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_created_secret_knows_its_fingerprint_and_undoes_to_its_id() {
        let c = created(7);
        assert_eq!(c.facts().fingerprint, Fingerprint::of_bytes(b"v"));
        assert_eq!(c.facts().expiration, DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(c.undo().id(), 7);
    }

    #[test]
    fn a_verified_secret_can_still_be_undone() {
        let c = created(3);
        let v = Verified {
            facts: c.facts.clone(),
            value: c.value,
        };
        assert_eq!(v.undo(), Undo { id: 3 });
    }

    #[test]
    fn only_throttling_server_errors_refusals_and_transport_are_retried_in_verify() {
        let api = |status| ConnectError::Api {
            operation: "verify".into(),
            status,
            body: Box::default(),
        };
        assert!(retry_verify(&api(429)));
        assert!(retry_verify(&api(503)));
        assert!(!retry_verify(&api(400)));
    }
}
