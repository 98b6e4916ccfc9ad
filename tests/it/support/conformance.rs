//! The store conformance suite: written once, run against every `SecretStore` (each
//! backend's test file calls it with a store pointed at its real server on loopback).
//! [`faults`] are the network's fault cases (a lost answer to a write that landed, a
//! write lost once and its late copy, a write refused, a write the server fails, a lost
//! answer that cannot be read back), run against every store that writes over the
//! network, through a [`FaultProxy`](super::proxy::FaultProxy) in front of its server. Not here: the file
//! and kms_file stores' own fault cases (their write is a local rename: the file store's
//! crash-sequence test covers it), a backend's own rules (its test file).

use std::future::Future;

use cds_rotator::domain::{Current, Fingerprint, StoreRecord};
use cds_rotator::store::{SecretStore, StoreError};
use chrono::{DurationRound, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::proxy::{Fault, FaultProxy};

/// A record as the reconciler would write it for `value` (times whole seconds).
pub fn record(secret_id: i32, value: &str) -> StoreRecord {
    let now = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    StoreRecord {
        client_id: "0b0c1d2e-3f40-4152-6374-8596a7b8c9d0".into(),
        tenant_id: "8c6f1f3e-1d2c-4b5a-9e8f-7a6b5c4d3e2f".into(),
        secret_id,
        expiration: now + TimeDelta::days(90),
        published_at: now,
        fingerprint: Fingerprint::of(&SecretString::from(value.to_owned())),
    }
}

/// A value nobody else has, shaped like a CDS secret.
pub fn value(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// What every store must do. `read_value` reads the value readers get under `key`
/// through the backend's own API (a file read, a GET to the service).
pub async fn publish_read_replace<F, Fut>(store: &dyn SecretStore, key: &str, read_value: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    // Nothing yet.
    assert_eq!(
        store.read_current(key).await.expect("read an empty store"),
        Current::Empty,
        "{}",
        store.location(key)
    );
    assert!(
        store.read_value(key).await.expect("read nothing").is_none(),
        "an empty store has no value"
    );
    // Publish, then read back the same record; readers get the value.
    let first = value("first");
    let first_record = record(2, &first);
    store
        .publish(key, &SecretString::from(first.clone()), &first_record)
        .await
        .expect("publish");
    assert_eq!(
        store.read_current(key).await.expect("read back"),
        Current::Published(first_record.clone())
    );
    assert_eq!(read_value().await.as_deref(), Some(first.as_str()));
    // The store reads back what readers get (the rotator's own credential source).
    assert_eq!(
        store
            .read_value(key)
            .await
            .expect("read the value")
            .as_ref()
            .map(|v| v.expose_secret().to_owned())
            .as_deref(),
        Some(first.as_str())
    );
    // A second publish replaces both at once.
    let second = value("second");
    let second_record = record(3, &second);
    store
        .publish(key, &SecretString::from(second.clone()), &second_record)
        .await
        .expect("second publish");
    assert_eq!(
        store.read_current(key).await.expect("read back"),
        Current::Published(second_record)
    );
    assert_eq!(read_value().await.as_deref(), Some(second.as_str()));
    assert_eq!(
        store
            .read_value(key)
            .await
            .expect("read the replaced value")
            .as_ref()
            .map(|v| v.expose_secret().to_owned())
            .as_deref(),
        Some(second.as_str())
    );
    // The location names the secret and holds no value.
    let location = store.location(key);
    assert!(!location.contains(&first) && !location.contains(&second));
    // The probe writes nothing readers see.
    store.probe().await.expect("probe");
    assert_eq!(read_value().await.as_deref(), Some(second.as_str()));
}

/// An error from a store that cannot be reached names it and shows no value.
pub fn names_the_store_without_values(error: &dyn std::error::Error, store: &str, values: &[&str]) {
    let text = format!("{error} {error:?}");
    assert!(text.contains(store), "{text}");
    for v in values {
        assert!(!text.contains(v), "a value leaked: {text}");
    }
}

/// A store whose every request passes through `proxy`, for [`faults`].
pub struct Behind<'a> {
    /// The store, pointed at the proxy.
    pub store: &'a dyn SecretStore,
    /// Its name in the policy (errors must name it).
    pub name: &'a str,
    /// The proxy in front of the store's server.
    pub proxy: &'a FaultProxy,
    /// Text in the head of the store's write requests of `key` after the first
    /// (`"PUT /secrets/cds-app"`, `"x-amz-target: secretsmanager.PutSecretValue"`).
    pub write: &'a str,
}

/// The fault cases every store that writes over the network must pass, in turn on one
/// key. `read_value` reads the value readers get under `key` from the server itself (not
/// through the proxy). A lost answer to a write that landed is a success, and so is a
/// write lost in the network once (sent again; its late copy changes nothing); a refused
/// write did not land (`Io`); a write the server fails every time, or whose answer is
/// lost with nothing readable after it, is in doubt (`OutcomeUnknown`): never a
/// success, and never a value readers did not get. No error shows a value.
pub async fn faults<F, Fut>(s: &Behind<'_>, key: &str, read_value: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let publish = async |tag: &str, id: i32| {
        let v = value(tag);
        let r = record(id, &v);
        let result = s
            .store
            .publish(key, &SecretString::from(v.clone()), &r)
            .await;
        (v, r, result)
    };
    // A first value, without faults.
    let (first, _, result) = publish("first", 2).await;
    result.expect("publish without faults");

    // The write lands, its answer is lost: the store finds out it landed.
    s.proxy.on(s.write, Fault::DropAnswer, 1);
    let (landed, landed_record, result) = publish("landed", 3).await;
    result.expect("the write landed: a success");
    assert!(
        s.proxy.log().iter().any(|l| l.ends_with("[DropAnswer]")),
        "no write matched {:?}: {:?}",
        s.write,
        s.proxy.log()
    );
    s.proxy.clear();
    assert_eq!(
        s.store.read_current(key).await.expect("read back"),
        Current::Published(landed_record.clone())
    );
    assert_eq!(read_value().await.as_deref(), Some(landed.as_str()));

    // The write is lost in the network once: sent again, it lands, and its copy that
    // lands late changes nothing readers see.
    s.proxy.on(s.write, Fault::Hold, 1);
    let (resent, resent_record, result) = publish("resent", 4).await;
    result.expect("sent again, the write lands");
    s.proxy.clear();
    assert_eq!(s.proxy.held(), 1, "{:?}", s.proxy.log());
    s.proxy.deliver_held().await;
    assert_eq!(
        s.store.read_current(key).await.expect("read back"),
        Current::Published(resent_record.clone())
    );
    assert_eq!(read_value().await.as_deref(), Some(resent.as_str()));

    // The server refuses the write: it did not land, readers keep what they had.
    s.proxy.on(
        s.write,
        Fault::Refuse {
            status: 403,
            retry_after: 0,
        },
        100,
    );
    let (refused, _, result) = publish("refused", 5).await;
    let err = result.expect_err("a refused write fails");
    s.proxy.clear();
    assert!(matches!(err, StoreError::Io { .. }), "not in doubt: {err}");
    names_the_store_without_values(&err, s.name, &[&first, &landed, &resent, &refused]);
    assert_eq!(read_value().await.as_deref(), Some(resent.as_str()));
    assert_eq!(
        s.store.read_current(key).await.expect("read back"),
        Current::Published(resent_record)
    );

    // The server fails every attempt: nothing tells it will never land.
    s.proxy.on(
        s.write,
        Fault::Refuse {
            status: 503,
            retry_after: 0,
        },
        100,
    );
    let (failed, _, result) = publish("failed", 6).await;
    let err = result.expect_err("a write the server fails is no success");
    s.proxy.clear();
    assert!(
        matches!(err, StoreError::OutcomeUnknown { .. }),
        "in doubt: {err}"
    );
    names_the_store_without_values(&err, s.name, &[&resent, &failed]);
    assert_eq!(read_value().await.as_deref(), Some(resent.as_str()));

    // The write lands, its answer is lost and nothing can be read back: in doubt, and
    // readers have the new value.
    s.proxy.on(s.write, Fault::DropAnswerAndCut, 1);
    let (unread, unread_record, result) = publish("unread", 7).await;
    let err = result.expect_err("a write nobody can read back is no success");
    s.proxy.clear();
    assert!(
        matches!(err, StoreError::OutcomeUnknown { .. }),
        "in doubt: {err}"
    );
    names_the_store_without_values(&err, s.name, &[&resent, &unread]);
    assert_eq!(read_value().await.as_deref(), Some(unread.as_str()));
    assert_eq!(
        s.store.read_current(key).await.expect("read back"),
        Current::Published(unread_record)
    );
}
