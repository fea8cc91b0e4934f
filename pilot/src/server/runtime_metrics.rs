//! Gauges of the async runtime itself, read at each scrape: how many tasks are alive shows
//! whether connections that went away left tasks behind (Go's `go_goroutines` plays that
//! part for upstream istiod); the allocator's live and resident bytes tell memory that is
//! still in use from memory the allocator keeps in partly used pages (Go's
//! `go_memstats_heap_alloc_bytes` and `go_memstats_heap_inuse_bytes`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;

/// Name of the alive-tasks gauge on `/metrics`.
pub const ALIVE_TASKS: &str = "pilot_tokio_alive_tasks";
/// Bytes in live heap allocations (the allocator's own count).
pub const HEAP_ALLOCATED: &str = "pilot_memory_heap_allocated_bytes";
/// Bytes of physical memory in pages the allocator holds (live, free but not yet returned,
/// and its own metadata).
pub const HEAP_RESIDENT: &str = "pilot_memory_heap_resident_bytes";

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
        encode_gauge(
            &mut encoder,
            ALIVE_TASKS,
            "Tasks alive in istiod's async runtime (spawned and not yet finished).",
            alive,
        )?;
        if let Some(heap) = heap_stats() {
            encode_gauge(
                &mut encoder,
                HEAP_ALLOCATED,
                "Bytes in live heap allocations, as the allocator counts them.",
                heap.allocated,
            )?;
            encode_gauge(
                &mut encoder,
                HEAP_RESIDENT,
                "Bytes of physical memory in pages the allocator holds: live allocations, freed memory not yet returned to the system, and the allocator's metadata.",
                heap.resident,
            )?;
        }
        Ok(())
    }
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// The allocator's counts, refreshed.
struct HeapStats {
    allocated: usize,
    resident: usize,
}

#[cfg(feature = "jemalloc")]
fn heap_stats() -> Option<HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc's statistics are a snapshot taken when the epoch advances.
    epoch::advance().ok()?;
    Some(HeapStats {
        allocated: stats::allocated::read().ok()?,
        resident: stats::resident::read().ok()?,
    })
}

/// Without jemalloc (a heap profiler's build) the system allocator keeps no such counts.
#[cfg(not(feature = "jemalloc"))]
fn heap_stats() -> Option<HeapStats> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scraped(registry: &Registry) -> i64 {
        gauge(registry, ALIVE_TASKS)
    }

    fn gauge(registry: &Registry, name: &str) -> i64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} sample in\n{text}"));
        line[name.len() + 1..].parse().expect("an integer")
    }

    #[cfg(feature = "jemalloc")]
    #[tokio::test]
    async fn heap_gauges_follow_live_allocations() {
        let mut registry = Registry::default();
        register(&mut registry, Handle::current());
        let before = gauge(&registry, HEAP_ALLOCATED);
        // Large next to what other tests allocate meanwhile in this process.
        let block = vec![1u8; 256 << 20];
        let during = gauge(&registry, HEAP_ALLOCATED);
        assert!(gauge(&registry, HEAP_RESIDENT) >= 256 << 20);
        drop(block);
        let after = gauge(&registry, HEAP_ALLOCATED);
        assert!(during - before >= 128 << 20, "{before} -> {during}");
        assert!(during - after >= 128 << 20, "{during} -> {after}");
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
