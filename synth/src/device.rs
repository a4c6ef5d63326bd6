//! Choosing the tensor device: burn's pure-Rust CPU backend (flex) by default, a GPU through
//! burn-wgpu when fedsynth is built with the `wgpu` feature and an adapter exists.

use burn::prelude::Device;

use crate::error::{Result, SynthError};

/// Where training and sampling run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// burn's CPU backend.
    #[default]
    Cpu,
    /// A GPU (or software adapter) through burn-wgpu.
    Wgpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(SynthError::Setting(format!(
                "unknown device '{other}' (use cpu or wgpu)"
            ))),
        }
    }
}

/// Opens the device, seeded for reproducible initialisation.
pub fn open(choice: DeviceChoice, seed: u64) -> Result<Device> {
    let device = match choice {
        DeviceChoice::Cpu => Device::flex(),
        DeviceChoice::Wgpu => {
            return Err(SynthError::Device(
                "this build of fedsynth has no GPU support: rebuild with `--features wgpu` (cargo build --release --features wgpu)".into(),
            ));
        }
    };
    device.seed(seed);
    Ok(device)
}
