//! Validated privacy parameters. Each is a newtype built only through a constructor that
//! returns `Result`, so a negative, NaN or infinite value can never reach an accountant.

use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};

macro_rules! positive_f64 {
    ($(#[$doc:meta])* $name:ident, $label:literal, $check:expr, $why:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            /// Validates and wraps the value.
            pub fn new(value: f64) -> Result<Self> {
                let ok: fn(f64) -> bool = $check;
                if ok(value) { Ok(Self(value)) } else { Err(invalid($label, value, $why)) }
            }
            /// The raw value.
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = crate::error::PrivacyError;
            fn try_from(value: f64) -> Result<Self> {
                Self::new(value)
            }
        }

        impl From<$name> for f64 {
            fn from(value: $name) -> f64 {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_f64!(
    /// A privacy-loss bound ε: finite and non-negative.
    Epsilon, "epsilon", |v| v.is_finite() && v >= 0.0, "must be a finite number ≥ 0"
);
positive_f64!(
    /// A failure probability δ in (0, 1).
    Delta, "delta", |v| v > 0.0 && v < 1.0, "must be in (0, 1)"
);
positive_f64!(
    /// A noise multiplier σ (noise standard deviation over sensitivity): finite and > 0.
    NoiseMultiplier, "noise multiplier", |v| v.is_finite() && v > 0.0, "must be a finite number > 0"
);
positive_f64!(
    /// A Poisson sampling rate q in (0, 1].
    SamplingRate, "sampling rate", |v| v > 0.0 && v <= 1.0, "must be in (0, 1]"
);
positive_f64!(
    /// A sensitivity or noise scale: finite and > 0.
    Scale, "scale", |v| v.is_finite() && v > 0.0, "must be a finite number > 0"
);

/// A number of composed steps: at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Steps(u64);

impl Steps {
    /// Validates and wraps the count (must be ≥ 1 and ≤ 10⁹).
    pub fn new(value: u64) -> Result<Self> {
        if (1..=1_000_000_000).contains(&value) {
            Ok(Self(value))
        } else {
            Err(invalid("steps", value, "must be between 1 and 10^9"))
        }
    }
    /// The raw count.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Steps {
    type Error = crate::error::PrivacyError;
    fn try_from(value: u64) -> Result<Self> {
        Self::new(value)
    }
}

impl From<Steps> for u64 {
    fn from(value: Steps) -> u64 {
        value.0
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values_with_a_message() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = Epsilon::new(bad).unwrap_err().to_string();
            assert!(err.contains("epsilon"), "{err}");
        }
        assert!(Delta::new(0.0).is_err());
        assert!(Delta::new(1.0).is_err());
        assert!(Delta::new(f64::NAN).is_err());
        assert!(NoiseMultiplier::new(0.0).is_err());
        assert!(NoiseMultiplier::new(f64::INFINITY).is_err());
        assert!(SamplingRate::new(0.0).is_err());
        assert!(SamplingRate::new(1.5).is_err());
        assert!(Steps::new(0).is_err());
        assert!(Epsilon::new(0.0).is_ok());
        assert!(SamplingRate::new(1.0).is_ok());
    }

    #[test]
    fn deserialisation_validates() {
        assert!(serde_json::from_str::<Epsilon>("-3.0").is_err());
        assert_eq!(serde_json::from_str::<Epsilon>("3.0").unwrap().get(), 3.0);
    }
}
