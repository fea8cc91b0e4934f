//! Debouncing: config changes are merged until things are quiet for `after`, or for at
//! most `max`, so a burst of edits costs one push.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::config::ChangeSet;

/// Settings of the debouncer (`PILOT_DEBOUNCE_AFTER`, `PILOT_DEBOUNCE_MAX`,
/// `PILOT_ENABLE_EDS_DEBOUNCE`).
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    pub after: Duration,
    pub max: Duration,
    pub eds: bool,
}

/// One merged batch of changes.
#[derive(Debug)]
pub struct Batch {
    pub changes: ChangeSet,
    /// When the first change of the batch arrived.
    pub first_at: Instant,
    /// How many events were merged.
    pub events: usize,
}

impl Debounce {
    /// Waits for the next batch; `None` when the sender is gone.
    pub async fn next(&self, rx: &mut UnboundedReceiver<ChangeSet>) -> Option<Batch> {
        let first = rx.recv().await?;
        let first_at = Instant::now();
        let mut batch = Batch {
            changes: first,
            first_at,
            events: 1,
        };
        if !self.eds && batch.changes.endpoints_only() {
            return Some(batch);
        }
        let mut last_at = first_at;
        loop {
            let deadline = (last_at + self.after).min(first_at + self.max);
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(c) => {
                        batch.changes.merge(&c);
                        batch.events += 1;
                        last_at = Instant::now();
                    }
                    None => return Some(batch),
                },
                _ = tokio::time::sleep_until(deadline) => return Some(batch),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use std::collections::BTreeSet;
    use tokio::sync::mpsc;

    fn change(k: Kind) -> ChangeSet {
        ChangeSet {
            kinds: BTreeSet::from([k]),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn merges_a_burst_until_quiet() {
        let d = Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
            eds: true,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        tokio::spawn(async move {
            for k in [Kind::Service, Kind::VirtualService, Kind::EndpointSlice] {
                tx.send(change(k)).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let batch = d.next(&mut rx).await.unwrap();
        assert_eq!(batch.events, 3);
        assert_eq!(batch.changes.kinds.len(), 3);
        // Last event at 100ms, then 100ms of quiet.
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn max_bounds_a_never_ending_stream() {
        let d = Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(1),
            eds: true,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        tokio::spawn(async move {
            loop {
                if tx.send(change(Kind::Service)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let batch = d.next(&mut rx).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(batch.events >= 20);
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_changes_skip_debounce_when_disabled() {
        let d = Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
            eds: false,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        tx.send(change(Kind::EndpointSlice)).unwrap();
        let batch = d.next(&mut rx).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(batch.changes.endpoints_only());
    }
}
