//! Latency samples, percentiles and counters merged from the worker threads.

use std::collections::BTreeMap;

/// What one load thread measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Completed operations (sessions or messages).
    pub(crate) ops: u64,
    /// Payload bytes of the completed messages.
    pub(crate) bytes: u64,
    /// The latency of each completed operation, in microseconds.
    pub(crate) latencies_us: Vec<u32>,
    /// Failures by kind (`connect`, `tls`, `eof`, `timeout`, `protocol`, ...).
    pub(crate) errors: BTreeMap<String, u64>,
    /// Unexpected replies by code (e.g. a 451 to MAIL).
    pub(crate) replies: BTreeMap<u16, u64>,
    /// Connections that completed their setup (banner, EHLO, TLS).
    pub(crate) established: u64,
}

impl Stats {
    /// Counts one failure of `kind`.
    pub(crate) fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Counts one unexpected reply.
    pub(crate) fn reply(&mut self, code: u16) {
        *self.replies.entry(code).or_default() += 1;
    }

    /// Records one completed operation that took `micros`.
    pub(crate) fn record(&mut self, micros: u64) {
        self.ops += 1;
        self.latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
    }

    /// Adds another thread's figures to these.
    pub(crate) fn merge(&mut self, other: Stats) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.established += other.established;
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.replies {
            *self.replies.entry(k).or_default() += v;
        }
    }
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted` (ascending): the smallest value
/// such that at least p% of the samples are at or below it. `None` for no samples.
pub(crate) fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Latency percentiles as `key=value` pairs in milliseconds: p50, p90, p99, max.
pub(crate) fn latency_fields(latencies_us: &mut [u32]) -> String {
    latencies_us.sort_unstable();
    let ms = |v: Option<u32>| {
        v.map_or_else(
            || "-".to_owned(),
            |us| format!("{:.3}", f64::from(us) / 1000.0),
        )
    };
    format!(
        "p50_ms={} p90_ms={} p99_ms={} max_ms={}",
        ms(percentile(latencies_us, 50.0)),
        ms(percentile(latencies_us, 90.0)),
        ms(percentile(latencies_us, 99.0)),
        ms(latencies_us.last().copied()),
    )
}

/// A map as `k1:v1,k2:v2`, or `0` when it is empty.
pub(crate) fn counts<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "0".to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.1), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.0), Some(7));
        // 10 samples: p50 is the 5th, p90 the 9th, p99 the 10th.
        let w: Vec<u32> = (10..20).collect();
        assert_eq!(percentile(&w, 50.0), Some(14));
        assert_eq!(percentile(&w, 90.0), Some(18));
        assert_eq!(percentile(&w, 99.0), Some(19));
    }

    #[test]
    fn fields_sort_and_format() {
        let mut v = vec![3000, 1000, 2000, 250];
        assert_eq!(
            latency_fields(&mut v),
            "p50_ms=1.000 p90_ms=3.000 p99_ms=3.000 max_ms=3.000"
        );
        assert_eq!(
            latency_fields(&mut []),
            "p50_ms=- p90_ms=- p99_ms=- max_ms=-"
        );
    }

    #[test]
    fn merge_and_counts() {
        let mut a = Stats::default();
        a.record(10);
        a.error("tls");
        a.reply(451);
        let mut b = Stats::default();
        b.record(20);
        b.error("tls");
        b.error("eof");
        b.bytes = 5;
        a.merge(b);
        assert_eq!(a.ops, 2);
        assert_eq!(a.bytes, 5);
        assert_eq!(a.errors.values().sum::<u64>(), 3);
        assert_eq!(counts(&a.errors), "eof:1,tls:2");
        assert_eq!(counts(&a.replies), "451:1");
        assert_eq!(counts(&BTreeMap::<u16, u64>::new()), "0");
    }
}
