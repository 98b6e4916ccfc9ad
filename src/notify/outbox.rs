//! The outbox: events are sent in the background, so that no step of a pass waits for a
//! notifier (a command notifier may take up to its timeout).
//!
//! A pass hands each event to [`Outbox::send`] and goes on at once. Events of one client
//! are sent in the order they were handed in (`rotated` after `store_record_missing`);
//! clients do not wait for each other. At most [`QUEUE`] events are under way at once: a
//! pass that finds the outbox full waits for room (at most one notifier timeout, which
//! the daemon's health budget counts). Once a stop is asked for, what is still under way
//! gets [`super::STOP_GRACE`], then is abandoned and counted as failed. `--run-now`
//! waits for everything with [`Outbox::flush`] before it exits. Not here: what an event
//! says (that is `rotation`), how a notifier sends it (its own file).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use super::{Notifier, Unsent};
use crate::domain::Event;
use crate::stop::Stop;

/// How many events may be under way (queued or being sent) at once.
pub const QUEUE: usize = 256;

/// The events handed in and not yet sent, per client.
pub struct Outbox {
    /// One permit per event under way.
    room: Arc<Semaphore>,
    /// Per client key: the last event handed in signals here when its sends are over.
    chains: Mutex<HashMap<String, oneshot::Receiver<()>>>,
    /// The sends under way.
    tasks: Mutex<JoinSet<()>>,
}

/// The process's outbox (one for every policy a daemon reloads: reloading never drops
/// events under way).
pub fn outbox() -> &'static Outbox {
    static OUTBOX: OnceLock<Outbox> = OnceLock::new();
    OUTBOX.get_or_init(Outbox::new)
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new()
    }
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox {
            room: Arc::new(Semaphore::new(QUEUE)),
            chains: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Hands `event` over for every notifier that wants it, after the events handed in
    /// earlier under the same `key` (a client). Returns once it is queued; waits only
    /// while [`QUEUE`] events are under way. A failure is logged and counted, never an
    /// error.
    pub async fn send(
        &self,
        key: &str,
        notifiers: &[Arc<dyn Notifier>],
        event: Event,
        stop: &Stop,
    ) {
        let wanted: Vec<Arc<dyn Notifier>> = notifiers
            .iter()
            .filter(|n| n.wants(event.kind))
            .cloned()
            .collect();
        if wanted.is_empty() {
            return;
        }
        let room = tokio::select! {
            permit = Arc::clone(&self.room).acquire_owned() => permit.ok(),
            () = stop.wait(), if self.room.available_permits() == 0 => None,
        };
        let Some(room) = room else {
            // Stopping with the outbox full: not sent at all.
            drop(Unsent::new(&wanted, event.kind));
            return;
        };
        let (done, next) = oneshot::channel();
        let before = lock(&self.chains).insert(key.to_owned(), next);
        let stop = stop.clone();
        let mut tasks = lock(&self.tasks);
        // Finished sends are reaped here, so a long-running daemon keeps none.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _room = room;
            let unsent = Unsent::new(&wanted, event.kind);
            let deadline = OnceLock::new();
            let ordered = async {
                // The client's earlier event was abandoned at a stop: so is this one
                // (never sent out of order).
                if let Some(before) = before
                    && before.await.is_err()
                    && stop.is_set()
                {
                    return;
                }
                super::send_each(&wanted, &event, &unsent).await;
                // The client's next event goes now; dropped unsent, it is abandoned too.
                let _ = done.send(());
            };
            tokio::select! {
                () = ordered => {}
                () = super::stop_deadline(&stop, &deadline) => {}
            }
        });
    }

    /// Waits until every event handed in so far is sent, failed or abandoned (each
    /// bounded by its notifiers' timeouts, and by the stop grace once a stop is asked).
    pub async fn flush(&self) {
        loop {
            let mut tasks = std::mem::take(&mut *lock(&self.tasks));
            if tasks.is_empty() {
                return;
            }
            while tasks.join_next().await.is_some() {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::EventKind;
    use crate::notify::NotifyError;

    /// Records what it was sent; events of the `slow` kind wait for a permit of `gate`
    /// first (none: forever).
    struct Records {
        name: &'static str,
        seen: Arc<Mutex<Vec<EventKind>>>,
        slow: EventKind,
        gate: Arc<Semaphore>,
    }

    #[async_trait]
    impl Notifier for Records {
        fn name(&self) -> &str {
            self.name
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(3600)
        }
        async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
            if event.kind == self.slow {
                let _ = self.gate.acquire().await.map(|p| p.forget());
            }
            lock(&self.seen).push(event.kind);
            Ok(())
        }
    }

    fn event(kind: EventKind) -> Event {
        let mut e = crate::notify::tests::rotated();
        e.kind = kind;
        e
    }

    /// A recording notifier, what it saw, and the gate of its slow kind.
    type Recording = (
        Arc<dyn Notifier>,
        Arc<Mutex<Vec<EventKind>>>,
        Arc<Semaphore>,
    );

    fn records(name: &'static str) -> Recording {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let n: Arc<dyn Notifier> = Arc::new(Records {
            name,
            seen: Arc::clone(&seen),
            slow: EventKind::StoreRecordMissing,
            gate: Arc::clone(&gate),
        });
        (n, seen, gate)
    }

    #[tokio::test]
    async fn a_send_returns_before_the_notifier_is_done_and_one_clients_events_keep_their_order() {
        let (n, seen, gate) = records("outbox-order");
        let outbox = Outbox::new();
        let stop = Stop::new();
        let n = std::slice::from_ref(&n);
        // Handed in while the notifier cannot finish: send returns all the same.
        outbox
            .send("t/c", n, event(EventKind::StoreRecordMissing), &stop)
            .await;
        outbox
            .send("t/c", n, event(EventKind::Rotated), &stop)
            .await;
        // Another client does not wait behind the slow one.
        outbox
            .send("t/other", n, event(EventKind::Retired), &stop)
            .await;
        while lock(&seen).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*lock(&seen), [EventKind::Retired]);
        gate.add_permits(1);
        outbox.flush().await;
        assert_eq!(
            *lock(&seen),
            [
                EventKind::Retired,
                EventKind::StoreRecordMissing,
                EventKind::Rotated
            ]
        );
    }

    #[tokio::test]
    async fn at_a_stop_what_is_still_under_way_is_abandoned_after_the_grace_and_counted_failed() {
        let (n, seen, _gate) = records("outbox-stop");
        let outbox = Outbox::new();
        let stop = Stop::new();
        let n = std::slice::from_ref(&n);
        outbox
            .send("t/c", n, event(EventKind::StoreRecordMissing), &stop)
            .await;
        outbox
            .send("t/c", n, event(EventKind::Rotated), &stop)
            .await;
        stop.trigger();
        // Ends after the stop's grace, although the notifier never would.
        outbox.flush().await;
        assert!(lock(&seen).is_empty());
        let text = crate::metrics::get().encode();
        assert!(
            text.contains(
                "cds_rotator_notifications_total{notifier=\"outbox-stop\",result=\"failed\"} 2"
            ),
            "{text}"
        );
    }
}
