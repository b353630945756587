//! A latency histogram in the HDR style: log-linear buckets, so every value
//! from 1 ns to `u64::MAX` ns is recorded with at most 1/64 (1.6 %) relative
//! error, in a fixed 30 KiB whatever the count. Recording is an index
//! computation and an increment; histograms of several threads merge by
//! adding their buckets.

/// Sub-buckets per power of two: the relative error is `1 / SUB`.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values below `2 * SUB` get a bucket each.
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// Latencies in nanoseconds.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    count: u64,
    max: u64,
    min: u64,
    sum: u128,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
            min: u64::MAX,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        // v has msb at bit `top` >= SUB_BITS + 1; keep SUB_BITS bits below it.
        let top = 63 - v.leading_zeros();
        let shift = top - SUB_BITS;
        let mantissa = (v >> shift) - SUB; // 0..SUB
        (LINEAR + (shift as u64 - 1) * SUB + mantissa) as usize
    }

    /// The largest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let shift = (i - LINEAR) / SUB + 1;
        let mantissa = (i - LINEAR) % SUB + SUB;
        let end = u128::from(mantissa + 1) << shift;
        u64::try_from(end - 1).unwrap_or(u64::MAX)
    }

    /// Records one value, in nanoseconds.
    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
        self.min = self.min.min(nanos);
        self.sum += u128::from(nanos);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
        self.min = self.min.min(other.min);
        self.sum += other.sum;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean, 0 when empty.
    pub fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum / u128::from(self.count)) as u64
        }
    }

    /// The value at quantile `q` (0..=1): the upper end of the bucket that
    /// holds it, never above the exact maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max).max(self.min);
            }
        }
        self.max
    }

    /// `p50_us=.. p99_us=.. p999_us=.. max_us=..` (microseconds, one decimal).
    pub fn summary_fields(&self, prefix: &str) -> String {
        format!(
            "{prefix}p50_us={} {prefix}p99_us={} {prefix}p999_us={} {prefix}max_us={}",
            us(self.quantile(0.50)),
            us(self.quantile(0.99)),
            us(self.quantile(0.999)),
            us(self.max())
        )
    }

    /// A line for people: count, mean and the usual percentiles.
    pub fn describe(&self) -> String {
        format!(
            "n={} mean={}us p50={}us p90={}us p99={}us p99.9={}us max={}us",
            self.count,
            us(self.mean()),
            us(self.quantile(0.50)),
            us(self.quantile(0.90)),
            us(self.quantile(0.99)),
            us(self.quantile(0.999)),
            us(self.max())
        )
    }
}

/// Nanoseconds as microseconds with one decimal.
pub fn us(nanos: u64) -> String {
    format!("{:.1}", nanos as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        // Every bucket's range starts right after the previous one's.
        for i in 1..BUCKETS - 1 {
            assert_eq!(Hist::upper(i - 1) + 1, lower(i), "bucket {i}");
            assert_eq!(Hist::index(lower(i)), i);
            assert_eq!(Hist::index(Hist::upper(i)), i);
            let (lo, hi) = (lower(i), Hist::upper(i));
            assert!(
                (hi - lo) as f64 <= lo as f64 / SUB as f64 + 1.0,
                "bucket {i}"
            );
        }
        assert_eq!(Hist::index(u64::MAX), BUCKETS - 1);
    }

    fn lower(i: usize) -> u64 {
        if i == 0 {
            0
        } else {
            Hist::upper(i - 1) + 1
        }
    }

    #[test]
    fn quantiles_within_the_error_bound() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, want) in [
            (0.5, 50_000_000u64),
            (0.99, 99_000_000),
            (0.999, 99_900_000),
        ] {
            let got = h.quantile(q);
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 1.0 / SUB as f64, "q={q}: {got} vs {want}");
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn merge_adds() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        a.record(5);
        b.record(7_000);
        b.record(9);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 7_000);
        assert_eq!(a.quantile(0.0), 5);
        assert_eq!(Hist::new().quantile(0.5), 0);
    }
}
