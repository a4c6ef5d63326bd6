//! The models and their settings as a job carries them: one typed value that `synth`
//! validates, read from the job spec's `model` table (`kind` and settings), which the
//! coordinator stores without reading it.

use serde::Deserialize;

use crate::ctgan::{Conditions, Ctgan, CtganConfig};
use crate::device::Device;
use crate::encoder::Encoder;
use crate::error::{Result, SynthError};
use crate::model::{Tvae, TvaeConfig, seeded_layers, shapes_parameters};
use crate::sample::Generator;

/// The shape of one of the model kinds, for rows of a given width.
enum Config {
    Tvae(TvaeConfig),
    Ctgan(CtganConfig),
}

/// A model and its settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelSettings {
    /// The variational autoencoder.
    Tvae {
        /// Width of the hidden layers.
        #[serde(default = "tvae_hidden")]
        hidden: usize,
        /// Weight of the KL term.
        #[serde(default = "tvae_kl")]
        kl_weight: f64,
    },
    /// The conditional GAN.
    Ctgan {
        /// Width of the generator's hidden layers.
        #[serde(default = "ctgan_hidden")]
        hidden: usize,
        /// Width of the discriminator's hidden layers.
        #[serde(default = "ctgan_critic")]
        critic_hidden: usize,
        /// Rows per discriminator input.
        #[serde(default = "ctgan_pac")]
        pac: usize,
    },
}

fn tvae_hidden() -> usize {
    128
}
fn tvae_kl() -> f64 {
    0.15
}
fn ctgan_hidden() -> usize {
    256
}
fn ctgan_critic() -> usize {
    64
}
fn ctgan_pac() -> usize {
    crate::ctgan::DP_PAC
}

/// Widest hidden layer a setting may ask for.
const MAX_HIDDEN: usize = 4096;

impl Default for ModelSettings {
    fn default() -> Self {
        Self::tvae()
    }
}

impl ModelSettings {
    /// The TVAE with its defaults.
    pub fn tvae() -> Self {
        Self::Tvae {
            hidden: tvae_hidden(),
            kl_weight: tvae_kl(),
        }
    }

    /// The model's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tvae { .. } => "tvae",
            Self::Ctgan { .. } => "ctgan",
        }
    }

    /// From a job's `model` as a table of `kind` and settings (a name alone is
    /// `{ kind = NAME }`: its defaults). Unknown models, unknown settings and out-of-range
    /// values are refused, naming them.
    pub fn from_table(settings: &toml::Table) -> Result<Self> {
        let bad = |m: String| SynthError::Setting(format!("model: {m}"));
        // (setting, whether it is a whole number) per model.
        let known: &[(&str, bool)] = match settings.get("kind").and_then(toml::Value::as_str) {
            Some("tvae") => &[("hidden", true), ("kl_weight", false)],
            Some("ctgan") => &[("hidden", true), ("critic_hidden", true), ("pac", true)],
            Some(other) => {
                return Err(bad(format!("'{other}' is not a model (use tvae or ctgan)")));
            }
            None => return Err(bad("give its kind (tvae or ctgan)".into())),
        };
        for (key, value) in settings.iter().filter(|(k, _)| *k != "kind") {
            let Some(&(_, whole)) = known.iter().find(|(n, _)| n == key) else {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                return Err(bad(format!(
                    "unknown setting '{key}' (use {})",
                    names.join(", ")
                )));
            };
            let fits = match value {
                toml::Value::Integer(i) => !whole || *i >= 0,
                toml::Value::Float(_) => !whole,
                _ => false,
            };
            if !fits {
                return Err(bad(format!(
                    "{key} must be {}",
                    if whole {
                        "a whole number ≥ 0"
                    } else {
                        "a number"
                    }
                )));
            }
        }
        let parsed: Self = toml::Value::Table(settings.clone())
            .try_into()
            .map_err(|e| {
                let text = e.to_string();
                let lines: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                bad(lines.join(" "))
            })?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks every setting's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SynthError::Setting(format!("model: {m}")));
        let width = |name: &str, v: usize| {
            if (1..=MAX_HIDDEN).contains(&v) {
                Ok(())
            } else {
                bad(format!(
                    "{name} must be between 1 and {MAX_HIDDEN}, not {v}"
                ))
            }
        };
        match *self {
            Self::Tvae { hidden, kl_weight } => {
                width("hidden", hidden)?;
                if !(kl_weight.is_finite() && (0.0..=100.0).contains(&kl_weight)) {
                    return bad(format!("kl_weight must be in [0, 100], not {kl_weight}"));
                }
            }
            Self::Ctgan {
                hidden,
                critic_hidden,
                pac,
            } => {
                width("hidden", hidden)?;
                width("critic_hidden", critic_hidden)?;
                if !(1..=64).contains(&pac) {
                    return bad(format!("pac must be between 1 and 64, not {pac}"));
                }
            }
        }
        Ok(())
    }

    /// The model's shape for rows of `width` values.
    fn config(&self, width: usize) -> Config {
        match *self {
            Self::Tvae { hidden, kl_weight } => Config::Tvae(
                TvaeConfig::new(width)
                    .with_hidden(hidden)
                    .with_kl_weight(kl_weight),
            ),
            Self::Ctgan {
                hidden,
                critic_hidden,
                pac,
            } => Config::Ctgan(
                CtganConfig::new(width)
                    .with_hidden(hidden)
                    .with_critic_hidden(critic_hidden)
                    .with_pac(pac),
            ),
        }
    }

    /// The TVAE's shape for rows of `width` values; `None` for another model.
    pub fn tvae_config(&self, width: usize) -> Option<TvaeConfig> {
        match self.config(width) {
            Config::Tvae(config) => Some(config),
            Config::Ctgan(_) => None,
        }
    }

    /// The GAN's shape for rows of `width` values; `None` for another model.
    pub fn ctgan_config(&self, width: usize) -> Option<CtganConfig> {
        match self.config(width) {
            Config::Ctgan(config) => Some(config),
            Config::Tvae(_) => None,
        }
    }

    /// The model for rows encoded by `encoder`, initialised on `device`; the GAN's
    /// conditions come from the encoder's released (or public) frequencies.
    pub fn build(&self, encoder: &Encoder, device: &Device) -> Result<Model> {
        Ok(match self.config(encoder.width()) {
            Config::Tvae(tvae) => Model::Tvae(tvae.init(device)),
            Config::Ctgan(gan) => {
                Model::Ctgan(gan.init(Conditions::new(encoder.slot_frequencies()), device)?)
            }
        })
    }

    /// (d_in, d_out) of the model's layers, in the layout of its `to_flat`, for rows `width`
    /// wide and the GAN's conditions `condition_width` wide.
    fn shapes(&self, width: usize, condition_width: usize) -> Vec<(usize, usize)> {
        match self.config(width) {
            Config::Tvae(tvae) => tvae.dims().to_vec(),
            Config::Ctgan(gan) => gan.shapes(condition_width),
        }
    }

    /// Width of the GAN's condition vector for `encoder`.
    fn condition_width(encoder: &Encoder) -> usize {
        encoder
            .slot_frequencies()
            .iter()
            .map(|(_, p)| p.len())
            .sum()
    }

    /// Number of weights and biases of the model for rows encoded by `encoder`.
    pub fn parameters(&self, encoder: &Encoder) -> usize {
        self.parameters_for(encoder.width(), Self::condition_width(encoder))
    }

    /// Number of weights and biases for rows `width` wide and the GAN's conditions
    /// `condition_width` wide; the smallest model a schema of `c` columns can give is
    /// `parameters_for(c, 0)` (every column encodes to one value at least).
    pub fn parameters_for(&self, width: usize, condition_width: usize) -> usize {
        shapes_parameters(&self.shapes(width, condition_width))
    }

    /// Initial weights drawn from `seed` (the same on every device) for rows encoded by
    /// `encoder`, in the layout of the model's `to_flat`.
    pub fn seeded_flat(&self, encoder: &Encoder, seed: u64) -> Vec<f32> {
        seeded_layers(
            &self.shapes(encoder.width(), Self::condition_width(encoder)),
            seed,
        )
    }

    /// The settings as a job's `model` table.
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("kind".into(), self.kind().into());
        let int = |v: usize| toml::Value::Integer(v as i64);
        match *self {
            Self::Tvae { hidden, kl_weight } => {
                t.insert("hidden".into(), int(hidden));
                t.insert("kl_weight".into(), toml::Value::Float(kl_weight));
            }
            Self::Ctgan {
                hidden,
                critic_hidden,
                pac,
            } => {
                t.insert("hidden".into(), int(hidden));
                t.insert("critic_hidden".into(), int(critic_hidden));
                t.insert("pac".into(), int(pac));
            }
        }
        t
    }
}

/// A job's model as built from its settings.
#[derive(Debug)]
pub enum Model {
    /// The variational autoencoder.
    Tvae(Tvae),
    /// The conditional GAN.
    Ctgan(Ctgan),
}

impl Model {
    /// Every weight and bias as one flat vector.
    pub fn to_flat(&self) -> Vec<f32> {
        match self {
            Self::Tvae(m) => m.to_flat(),
            Self::Ctgan(m) => m.to_flat(),
        }
    }

    /// Replaces every weight and bias from `flat`; weights of the wrong count, not finite or
    /// out of range are refused before anything is replaced.
    pub fn load_flat(&mut self, flat: &[f32]) -> std::result::Result<(), String> {
        match self {
            Self::Tvae(m) => m.load_flat(flat),
            Self::Ctgan(m) => m.load_flat(flat),
        }
    }

    /// The model as a generator of rows.
    pub fn generator(&self) -> &dyn Generator {
        match self {
            Self::Tvae(m) => m,
            Self::Ctgan(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap_or_default()
    }

    #[test]
    fn names_tables_and_refusals() {
        assert_eq!(
            ModelSettings::from_table(&table("kind = \"tvae\"")).ok(),
            Some(ModelSettings::tvae())
        );
        let t = ModelSettings::from_table(&table("kind = \"tvae\"\nhidden = 256\nkl_weight = 0.1"));
        assert_eq!(
            t.ok(),
            Some(ModelSettings::Tvae {
                hidden: 256,
                kl_weight: 0.1
            })
        );
        let g = ModelSettings::from_table(&table("kind = \"ctgan\"\npac = 10")).ok();
        assert_eq!(
            g.as_ref().and_then(|g| g.ctgan_config(7)).map(|c| c.pac),
            Some(10)
        );
        for (text, needle) in [
            ("kind = \"gpt\"", "gpt"),
            ("kind = \"tvae\"\nwidth = 3", "width"),
            ("kind = \"ctgan\"\nkl_weight = 0.1", "kl_weight"),
            ("hidden = 3", "kind"),
            ("kind = \"ctgan\"\ncritic_hidden = -4", "critic_hidden"),
            ("kind = \"tvae\"\nhidden = 0", "hidden"),
            ("kind = \"tvae\"\nkl_weight = -1.0", "kl_weight"),
            ("kind = \"ctgan\"\npac = 0", "pac"),
            ("kind = \"ctgan\"\nhidden = \"wide\"", "hidden"),
        ] {
            let err = ModelSettings::from_table(&table(text))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(needle), "{text}: {err}");
        }
        // Round trip through the spec's table.
        for m in [ModelSettings::tvae(), g.unwrap_or_default()] {
            assert_eq!(ModelSettings::from_table(&m.to_table()).ok(), Some(m));
        }
    }
}
