//! Per-plugin metrics: calls, outcomes by kind, fuel, and distributions of
//! duration and peak memory. Recording is a handful of atomic additions per
//! call; reading takes a [`MetricsSnapshot`].

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ErrorKind;
use crate::report::Outcome;

/// Upper bounds of the duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Upper bounds of the peak-memory buckets, in bytes.
const MEMORY_BUCKETS: [f64; 8] = [
    (1u64 << 20) as f64,
    (4u64 << 20) as f64,
    (16u64 << 20) as f64,
    (64u64 << 20) as f64,
    (256u64 << 20) as f64,
    (1u64 << 30) as f64,
    (4u64 << 30) as f64,
    (16u64 << 30) as f64,
];

/// The live counters of one plugin.
#[derive(Debug)]
pub(crate) struct Metrics {
    calls: AtomicU64,
    successes: AtomicU64,
    failures: Mutex<Vec<(ErrorKind, u64)>>,
    fuel_consumed: AtomicU64,
    duration: Histogram<{ DURATION_BUCKETS.len() }>,
    peak_memory: Histogram<{ MEMORY_BUCKETS.len() }>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
            fuel_consumed: AtomicU64::new(0),
            duration: Histogram::new(&DURATION_BUCKETS),
            peak_memory: Histogram::new(&MEMORY_BUCKETS),
        }
    }
}

impl Metrics {
    /// Counts one call.
    pub(crate) fn record<T>(&self, outcome: &Outcome<T>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match &outcome.result {
            Ok(_) => {
                self.successes.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                let kind = err.kind();
                let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
                match failures.iter_mut().find(|(known, _)| *known == kind) {
                    Some((_, count)) => *count += 1,
                    None => failures.push((kind, 1)),
                }
            }
        }
        let report = &outcome.report;
        if let Some(fuel) = report.fuel_consumed {
            self.fuel_consumed.fetch_add(fuel, Ordering::Relaxed);
        }
        self.duration.observe(report.duration.as_secs_f64());
        self.peak_memory.observe(report.peak_memory_bytes as f64);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        failures.sort_by_key(|(kind, _)| kind.as_str());
        MetricsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures,
            fuel_consumed: self.fuel_consumed.load(Ordering::Relaxed),
            duration_seconds: self.duration.snapshot(),
            peak_memory_bytes: self.peak_memory.snapshot(),
        }
    }
}

/// A plugin's metrics at one moment.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned output.
    pub successes: u64,
    /// Failed calls, by kind, sorted by name.
    pub failures: Vec<(ErrorKind, u64)>,
    /// Fuel consumed across calls (0 when fuel is not metered).
    pub fuel_consumed: u64,
    /// How long calls took.
    pub duration_seconds: HistogramSnapshot,
    /// The instances' linear-memory high-water marks at the end of calls.
    pub peak_memory_bytes: HistogramSnapshot,
}

impl MetricsSnapshot {
    /// How many calls failed with `kind`.
    pub fn failures_of(&self, kind: ErrorKind) -> u64 {
        self.failures
            .iter()
            .find(|(known, _)| *known == kind)
            .map_or(0, |(_, count)| *count)
    }
}

/// A distribution: counts of observations at or below each bound, as
/// Prometheus histograms count them (cumulative).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations ≤ bound)`, ascending; observations above
    /// the last bound count only in `count`.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of all observations.
    pub sum: f64,
    /// How many observations there were.
    pub count: u64,
}

impl HistogramSnapshot {
    /// The smallest bucket bound at or above the `quantile` (0 to 1) of the
    /// observations, or `None` when it lies beyond the last bound.
    pub fn quantile_bound(&self, quantile: f64) -> Option<f64> {
        let wanted = (quantile * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, count)| *count >= wanted.max(1))
            .map(|(bound, _)| *bound)
    }

    /// The mean observation, or 0 with none.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// Duration histograms: the mean as a `Duration`.
    pub fn mean_duration(&self) -> Duration {
        Duration::from_secs_f64(self.mean())
    }
}

#[derive(Debug)]
struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    counts: [AtomicU64; N],
    count: AtomicU64,
    /// The sum, as `f64` bits, updated with compare-and-swap.
    sum_bits: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, value: f64) {
        if let Some(bucket) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::report::Report;

    fn outcome(result: Result<(), Error>, duration: Duration, memory: u64) -> Outcome<()> {
        Outcome {
            result,
            report: Report {
                duration,
                peak_memory_bytes: memory,
                fuel_consumed: Some(10),
                ..Report::default()
            },
        }
    }

    #[test]
    fn calls_are_counted_by_outcome_and_distributed() {
        let metrics = Metrics::default();
        metrics.record(&outcome(Ok(()), Duration::from_micros(50), 1 << 20));
        metrics.record(&outcome(Ok(()), Duration::from_millis(3), 3 << 20));
        let timeout = Error::Timeout {
            limit: Duration::from_secs(1),
        };
        metrics.record(&outcome(Err(timeout), Duration::from_secs(1), 8 << 20));
        let snapshot = metrics.snapshot();
        assert_eq!((snapshot.calls, snapshot.successes), (3, 2));
        assert_eq!(snapshot.failures_of(ErrorKind::Timeout), 1);
        assert_eq!(snapshot.failures_of(ErrorKind::Trap), 0);
        assert_eq!(snapshot.fuel_consumed, 30);
        let durations = &snapshot.duration_seconds;
        assert_eq!(durations.count, 3);
        assert_eq!(durations.buckets[0], (0.000_1, 1));
        assert_eq!(durations.quantile_bound(0.5), Some(0.005));
        assert_eq!(durations.quantile_bound(1.0), Some(1.0));
        assert_eq!(
            snapshot.peak_memory_bytes.quantile_bound(1.0),
            Some((16u64 << 20) as f64)
        );
    }
}
