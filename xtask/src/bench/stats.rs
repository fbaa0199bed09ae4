//! min / median / max of repeated measurements.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy)]
pub(super) struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub(super) fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        assert!(n > 0, "no measurements");
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Self { min: v[0], median, max: v[n - 1] }
    }

    pub(super) fn json(&self) -> Value {
        json!({ "min": self.min, "median": self.median, "max": self.max })
    }

    /// "median (min–max)" with `digits` decimals.
    pub(super) fn show(&self, digits: usize) -> String {
        format!("{:.d$} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
        assert_eq!(Spread::of(&[5.0]).median, 5.0);
    }
}
