//! `/metrics`: the server's and the plugins' metrics in Prometheus' text
//! exposition format (version 0.0.4).
//!
//! Written here rather than with `prometheus-client` (0.26) because that
//! crate cannot write this exposition unchanged. Its Prometheus text encoder
//! (`encoding::prometheus_text`, fed by a `Collector`) matches the names,
//! labels, types, HELP text and content type, but writes histogram bounds
//! as Go does and sums through `dtoa`: the peak-memory buckets' labels would
//! change from `le="1048576"` to `le="1.048576e+06"` (new series for
//! dashboards and for a Prometheus that keeps `le` as written) and their
//! `_sum` from `3342336` to `3342336.0`. Its OpenMetrics encoder changes
//! more: counter families without `_total` in `# HELP` and `# TYPE`, a
//! closing `# EOF` and another content type. The values are collected the
//! same either way ([`HttpStats`] and the registry's snapshots); only the
//! text is written here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use warden::{HistogramSnapshot, MetricsSnapshot, Registry};

/// Counters kept by the HTTP layer; the plugins' own metrics come from the
/// registry when scraped.
#[derive(Default)]
pub(crate) struct HttpStats {
    /// Requests answered, by plugin (empty for the server's own routes) and
    /// status code.
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    /// Requests the server answered instead of their plugin, by reason.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Requests being handled now.
    pub(crate) in_flight: AtomicI64,
    /// Client connections open now.
    pub(crate) connections_open: AtomicI64,
    /// Connections the server closed because a bound ran out, by reason.
    connections_closed: Mutex<BTreeMap<&'static str, u64>>,
    /// Streamed responses that ended without all their output after their
    /// status line was sent, by plugin and error.
    streams_failed: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// Bounds a connection can run out of, as the `reason` label of
/// `warden_http_connections_closed_total`.
const CONNECTION_CLOSES: [&str; 3] = ["idle-timeout", "header-read-timeout", "write-timeout"];

/// Reasons the server answers a request instead of its plugin (refused,
/// or cut off by the request timeout), as the `reason` label of
/// `warden_http_rejected_total`.
const REJECTIONS: [&str; 3] = ["saturated", "payload-too-large", "request-timeout"];

impl HttpStats {
    /// Counts one answered request.
    pub(crate) fn count(&self, plugin: Option<&str>, status: u16, error: Option<&'static str>) {
        let plugin = plugin.unwrap_or_default();
        let mut requests = lock(&self.requests);
        // The plugin's name is copied only the first time it is counted.
        if let Some(codes) = requests.get_mut(plugin) {
            *codes.entry(status).or_default() += 1;
        } else {
            requests.insert(plugin.to_owned(), BTreeMap::from([(status, 1)]));
        }
        drop(requests);
        if let Some(reason) = error.filter(|error| REJECTIONS.contains(error)) {
            *lock(&self.rejected).entry(reason).or_default() += 1;
        }
    }

    /// Counts one streamed response of `plugin` cut short by `error` (an
    /// error kind, or `response-abandoned`) after its status line.
    pub(crate) fn count_stream_failure(&self, plugin: &str, error: &'static str) {
        *lock(&self.streams_failed)
            .entry((plugin.to_owned(), error))
            .or_default() += 1;
    }

    /// Counts one connection closed because `reason` (one of
    /// [`CONNECTION_CLOSES`]) ran out.
    pub(crate) fn count_closed(&self, reason: &'static str) {
        *lock(&self.connections_closed).entry(reason).or_default() += 1;
    }
}

/// The `Content-Type` of the exposition.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole exposition; `body_bytes_held` is what request bodies hold of
/// the server's body memory now.
pub(crate) fn render(registry: &Registry, stats: &HttpStats, body_bytes_held: usize) -> String {
    let mut text = String::new();
    render_http(&mut text, stats, body_bytes_held);
    render_plugins(&mut text, registry);
    text
}

/// The HTTP layer's counters and gauges.
fn render_http(text: &mut String, stats: &HttpStats, body_bytes_held: usize) {
    header(
        text,
        "warden_http_requests_total",
        "counter",
        "HTTP requests answered, by plugin (empty for the server's own routes) and status code.",
    );
    for (plugin, codes) in lock(&stats.requests).iter() {
        for (status, count) in codes {
            let _ = writeln!(
                text,
                "warden_http_requests_total{{plugin=\"{}\",code=\"{status}\"}} {count}",
                escape(plugin)
            );
        }
    }
    header(
        text,
        "warden_http_rejected_total",
        "counter",
        "Requests the server answered instead of their plugin: saturated, payload-too-large or request-timeout.",
    );
    let rejected = lock(&stats.rejected);
    for reason in REJECTIONS {
        let count = rejected.get(reason).copied().unwrap_or(0);
        let _ = writeln!(
            text,
            "warden_http_rejected_total{{reason=\"{reason}\"}} {count}"
        );
    }
    drop(rejected);
    header(
        text,
        "warden_http_requests_in_flight",
        "gauge",
        "Requests being handled now.",
    );
    let _ = writeln!(
        text,
        "warden_http_requests_in_flight {}",
        stats.in_flight.load(Ordering::Relaxed)
    );
    header(
        text,
        "warden_http_connections_open",
        "gauge",
        "Client connections open now.",
    );
    let _ = writeln!(
        text,
        "warden_http_connections_open {}",
        stats.connections_open.load(Ordering::Relaxed)
    );
    header(
        text,
        "warden_http_request_body_bytes",
        "gauge",
        "Bytes of request bodies held now, out of --max-body-memory.",
    );
    let _ = writeln!(text, "warden_http_request_body_bytes {body_bytes_held}");
    header(
        text,
        "warden_http_connections_closed_total",
        "counter",
        "Connections the server closed: idle-timeout, header-read-timeout or write-timeout.",
    );
    let closed = lock(&stats.connections_closed);
    for reason in CONNECTION_CLOSES {
        let count = closed.get(reason).copied().unwrap_or(0);
        let _ = writeln!(
            text,
            "warden_http_connections_closed_total{{reason=\"{reason}\"}} {count}"
        );
    }
    drop(closed);
    header(
        text,
        "warden_http_streams_failed_total",
        "counter",
        "Streamed responses cut short after their status line, by plugin and error \
         (an error kind, or response-abandoned when the client stopped reading or went away).",
    );
    for ((plugin, error), count) in lock(&stats.streams_failed).iter() {
        let _ = writeln!(
            text,
            "warden_http_streams_failed_total{{plugin=\"{}\",error=\"{error}\"}} {count}",
            escape(plugin)
        );
    }
}

/// The instances alive, and every loaded plugin's metrics.
fn render_plugins(text: &mut String, registry: &Registry) {
    header(
        text,
        "warden_instances_in_use",
        "gauge",
        "Plugin instances alive now, across plugins.",
    );
    let _ = writeln!(
        text,
        "warden_instances_in_use {}",
        registry.runtime().instances_in_use()
    );
    let plugins: Vec<_> = registry
        .list()
        .into_iter()
        .filter_map(|entry| Some((entry.name.clone(), registry.get(&entry.name)?.metrics())))
        .collect();
    render_plugin_counters(text, &plugins);
    render_plugin_histograms(text, &plugins);
}

/// Each plugin's calls, failures and fuel.
fn render_plugin_counters(text: &mut String, plugins: &[(String, MetricsSnapshot)]) {
    header(
        text,
        "warden_plugin_calls_total",
        "counter",
        "Calls made to the plugin since it was (re)loaded.",
    );
    for (name, metrics) in plugins {
        let _ = writeln!(
            text,
            "warden_plugin_calls_total{{plugin=\"{}\"}} {}",
            escape(name),
            metrics.calls
        );
    }
    header(
        text,
        "warden_plugin_failures_total",
        "counter",
        "Failed calls, by plugin and error kind.",
    );
    for (name, metrics) in plugins {
        for (kind, count) in &metrics.failures {
            let _ = writeln!(
                text,
                "warden_plugin_failures_total{{plugin=\"{}\",kind=\"{}\"}} {count}",
                escape(name),
                kind.as_str()
            );
        }
    }
    header(
        text,
        "warden_plugin_fuel_consumed_total",
        "counter",
        "Fuel the plugin's calls consumed (0 when no plugin has a fuel limit).",
    );
    for (name, metrics) in plugins {
        let _ = writeln!(
            text,
            "warden_plugin_fuel_consumed_total{{plugin=\"{}\"}} {}",
            escape(name),
            metrics.fuel_consumed
        );
    }
}

/// Each plugin's call durations and peak memory.
fn render_plugin_histograms(text: &mut String, plugins: &[(String, MetricsSnapshot)]) {
    header(
        text,
        "warden_plugin_call_duration_seconds",
        "histogram",
        "Wall-clock time of calls, including instantiation and init for fresh instances.",
    );
    for (name, metrics) in plugins {
        histogram(
            text,
            "warden_plugin_call_duration_seconds",
            name,
            &metrics.duration_seconds,
        );
    }
    header(
        text,
        "warden_plugin_peak_memory_bytes",
        "histogram",
        "Linear-memory high-water mark of the instance at the end of each call.",
    );
    for (name, metrics) in plugins {
        histogram(
            text,
            "warden_plugin_peak_memory_bytes",
            name,
            &metrics.peak_memory_bytes,
        );
    }
}

fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

fn histogram(text: &mut String, name: &str, plugin: &str, snapshot: &HistogramSnapshot) {
    let plugin = escape(plugin);
    for (bound, count) in &snapshot.buckets {
        let _ = writeln!(
            text,
            "{name}_bucket{{plugin=\"{plugin}\",le=\"{bound}\"}} {count}"
        );
    }
    let _ = writeln!(
        text,
        "{name}_bucket{{plugin=\"{plugin}\",le=\"+Inf\"}} {}",
        snapshot.count
    );
    let _ = writeln!(text, "{name}_sum{{plugin=\"{plugin}\"}} {}", snapshot.sum);
    let _ = writeln!(
        text,
        "{name}_count{{plugin=\"{plugin}\"}} {}",
        snapshot.count
    );
}

/// A label value as the exposition format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("line\nbreak"), "line\\nbreak");
    }
}
