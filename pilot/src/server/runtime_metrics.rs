//! Gauges of the async runtime itself, read at each scrape: how many tasks are alive shows
//! whether connections that went away left tasks behind (Go's `go_goroutines` plays that
//! part for upstream istiod).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;

/// Name of the alive-tasks gauge on `/metrics`.
pub const ALIVE_TASKS: &str = "pilot_tokio_alive_tasks";

/// Registers the runtime gauges of the runtime `handle` belongs to.
pub fn register(registry: &mut Registry, handle: Handle) {
    registry.register_collector(Box::new(RuntimeCollector { handle }));
}

#[derive(Debug)]
struct RuntimeCollector {
    handle: Handle,
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let alive = self.handle.metrics().num_alive_tasks();
        let gauge = ConstGauge::new(i64::try_from(alive).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            ALIVE_TASKS,
            "Tasks alive in istiod's async runtime (spawned and not yet finished).",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scraped(registry: &Registry) -> i64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{ALIVE_TASKS} ")))
            .unwrap_or_else(|| panic!("no {ALIVE_TASKS} sample in\n{text}"));
        line[ALIVE_TASKS.len() + 1..].parse().expect("an integer")
    }

    #[tokio::test]
    async fn counts_tasks_until_they_finish() {
        let mut registry = Registry::default();
        register(&mut registry, Handle::current());
        let before = scraped(&registry);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = rx.await;
        });
        assert_eq!(scraped(&registry), before + 1);
        let _ = tx.send(());
        task.await.expect("the task ends");
        assert_eq!(scraped(&registry), before);
    }
}
