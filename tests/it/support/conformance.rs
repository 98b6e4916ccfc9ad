//! The store conformance suite: written once, run against every `SecretStore` (each
//! backend's test file calls it with a store pointed at its real server on loopback).

use std::future::Future;

use cds_rotator::domain::{Current, Fingerprint, StoreRecord};
use cds_rotator::store::SecretStore;
use chrono::{DurationRound, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};

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
