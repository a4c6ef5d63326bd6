//! Choosing the tensor device: burn's pure-Rust CPU backend (flex) by default, a GPU through
//! burn-wgpu when fedsynth is built with the `wgpu` feature and an adapter exists.

pub use burn::prelude::Device;

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
        DeviceChoice::Wgpu => wgpu()?,
    };
    device.seed(seed);
    Ok(device)
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
    Err(SynthError::Device(
        "this build of fedsynth has no GPU support: build it with `cargo build --release --features fedsynth-cli/wgpu`, or use --device cpu"
            .into(),
    ))
}

/// The wgpu device (`CUBECL_WGPU_DEFAULT_DEVICE` may pick one, e.g. `Cpu` for a software
/// adapter), checked with a small computation: wgpu devices open lazily and fail on first
/// use when no adapter exists, which must become a clear error before any budget is spent.
#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device> {
    use burn::prelude::{Tensor, TensorData};
    use burn::tensor::DeviceKind;
    // Without an adapter the wgpu runtime panics, on its own device thread and then here:
    // silenced while probing, so that the user reads one line, not two panics.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &device);
        let sum = t.sum().into_scalar::<f32>();
        (device, sum)
    });
    std::panic::set_hook(hook);
    match probe {
        Ok((device, sum)) if (sum - 3.0).abs() < 1e-6 => Ok(device),
        Ok(_) => Err(SynthError::Device("the wgpu adapter computed a wrong result".into())),
        Err(_) => Err(SynthError::Device(
            "no wgpu adapter is available (no GPU, or no Vulkan/Metal/DX12 driver); use --device cpu".into(),
        )),
    }
}
