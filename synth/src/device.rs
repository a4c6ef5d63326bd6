//! Choosing the tensor device: burn's pure-Rust CPU backend (flex), or a GPU (or a software
//! adapter) through burn-wgpu, which the default build of fedsynth includes.

pub use burn::prelude::Device;

use crate::error::{Result, SynthError};

/// Which wgpu adapter to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Adapter {
    /// The best one wgpu finds (a high-power GPU first); `CUBECL_WGPU_DEFAULT_DEVICE` (for
    /// example `DiscreteGpu(1)` or `Cpu`) overrides the choice.
    #[default]
    Best,
    /// The n-th discrete GPU.
    Discrete(usize),
    /// The n-th integrated GPU.
    Integrated(usize),
    /// The n-th virtual GPU.
    Virtual(usize),
    /// A software adapter that runs the shaders on the CPU (Mesa's lavapipe): slower than
    /// `cpu`, but the GPU code path on any machine, which is what the tests train on.
    Software,
}

/// Where training and sampling run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// burn's CPU backend.
    #[default]
    Cpu,
    /// A GPU (or software adapter) through burn-wgpu.
    Wgpu(Adapter),
}

/// The accepted spellings, for `--help` and errors.
pub const DEVICE_SYNTAX: &str =
    "cpu, wgpu, wgpu:discrete[:N], wgpu:integrated[:N], wgpu:virtual[:N] or wgpu:software";

impl std::str::FromStr for DeviceChoice {
    type Err = SynthError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || SynthError::Setting(format!("unknown device '{s}' (use {DEVICE_SYNTAX})"));
        let mut parts = s.split(':');
        let choice = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("cpu"), None, ..) => Self::Cpu,
            (Some("wgpu"), None, ..) => Self::Wgpu(Adapter::Best),
            (Some("wgpu"), Some("software"), None, _) => Self::Wgpu(Adapter::Software),
            (Some("wgpu"), Some(kind), index, None) => {
                let n = match index {
                    None => 0,
                    Some(i) => i.parse::<usize>().map_err(|_| bad())?,
                };
                Self::Wgpu(match kind {
                    "discrete" => Adapter::Discrete(n),
                    "integrated" => Adapter::Integrated(n),
                    "virtual" => Adapter::Virtual(n),
                    _ => return Err(bad()),
                })
            }
            _ => return Err(bad()),
        };
        Ok(choice)
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Wgpu(Adapter::Best) => f.write_str("wgpu"),
            Self::Wgpu(Adapter::Software) => f.write_str("wgpu:software"),
            Self::Wgpu(Adapter::Discrete(n)) => write!(f, "wgpu:discrete:{n}"),
            Self::Wgpu(Adapter::Integrated(n)) => write!(f, "wgpu:integrated:{n}"),
            Self::Wgpu(Adapter::Virtual(n)) => write!(f, "wgpu:virtual:{n}"),
        }
    }
}

/// An opened device and what it is, in words (the adapter wgpu found, for a GPU).
#[derive(Debug, Clone)]
pub struct Opened {
    /// The tensor device.
    pub device: Device,
    /// For example `cpu (burn's CPU backend, 2 threads)` or `wgpu: llvmpipe (LLVM 15.0.6,
    /// 256 bits) (Vulkan, software adapter on the CPU, driver llvmpipe Mesa 22.3.6 …)`.
    pub description: String,
}

/// Opens the device, seeded for reproducible initialisation.
pub fn open(choice: DeviceChoice, seed: u64) -> Result<Device> {
    open_described(choice, seed).map(|o| o.device)
}

/// Opens the device, seeded, and says what it is. A wgpu adapter is acquired once per
/// process (the runtime cannot be set up twice) and checked with a small computation: a
/// missing or broken adapter is one clear error, before any budget is spent.
pub fn open_described(choice: DeviceChoice, seed: u64) -> Result<Opened> {
    let opened = match choice {
        DeviceChoice::Cpu => Opened {
            device: Device::flex(),
            description: format!(
                "cpu (burn's CPU backend, {} threads)",
                std::thread::available_parallelism().map_or(1, usize::from)
            ),
        },
        DeviceChoice::Wgpu(adapter) => wgpu::open(adapter)?,
    };
    opened.device.seed(seed);
    Ok(opened)
}

#[cfg(not(feature = "wgpu"))]
mod wgpu {
    use super::{Adapter, Opened, Result, SynthError};

    pub(super) fn open(_: Adapter) -> Result<Opened> {
        Err(SynthError::Device(
            "this build of fedsynth has no GPU support (built with --no-default-features): build it with the default features, or use --device cpu"
                .into(),
        ))
    }
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::{Adapter, Device, Opened, Result, SynthError};
    use burn::prelude::{Tensor, TensorData};
    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::WgpuBackend;
    use burn::tensor::wgpu::wgpu::DeviceType;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// Adapters acquired by this process (or why they could not be).
    static OPENED: OnceLock<Mutex<HashMap<Adapter, std::result::Result<Opened, String>>>> =
        OnceLock::new();

    pub(super) fn open(adapter: Adapter) -> Result<Opened> {
        let mut opened = OPENED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        opened
            .entry(adapter)
            .or_insert_with(|| acquire(adapter))
            .clone()
            .map_err(SynthError::Device)
    }

    fn kind(adapter: Adapter) -> DeviceKind {
        match adapter {
            Adapter::Best => DeviceKind::DefaultDevice,
            Adapter::Discrete(n) => DeviceKind::DiscreteGpu(n),
            Adapter::Integrated(n) => DeviceKind::IntegratedGpu(n),
            Adapter::Virtual(n) => DeviceKind::VirtualGpu(n),
            Adapter::Software => DeviceKind::Cpu,
        }
    }

    fn acquire(adapter: Adapter) -> std::result::Result<Opened, String> {
        let none = |detail: &str| {
            format!(
                "no wgpu adapter is available for {} (no GPU, or no Vulkan/Metal/DX12 driver{detail}); use --device cpu",
                super::DeviceChoice::Wgpu(adapter)
            )
        };
        // The wgpu runtime can panic on its own device thread, then here: silenced while
        // probing, so that the user reads one line, not two panics.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let probe = std::panic::catch_unwind(|| {
            let mut options = Device::wgpu_options().device_kind(kind(adapter));
            // A software adapter is Mesa's lavapipe, a Vulkan driver: asked of Vulkan alone,
            // so that no other API is probed for one (OpenGL's probe talks to the display
            // server, and complains on stderr where there is none).
            if adapter == Adapter::Software && cfg!(not(target_vendor = "apple")) {
                options = options.graphics_api(WgpuBackend::Vulkan);
            }
            let (device, setup) = options.init_with_setup().map_err(|e| e.to_string())?;
            let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &device);
            let sum = t.sum().into_scalar::<f32>();
            Ok::<_, String>((device, setup.adapter.get_info(), sum))
        });
        std::panic::set_hook(hook);
        match probe {
            Ok(Ok((device, info, sum))) if (sum - 3.0).abs() < 1e-6 => {
                let kind = match info.device_type {
                    DeviceType::DiscreteGpu => "discrete GPU",
                    DeviceType::IntegratedGpu => "integrated GPU",
                    DeviceType::VirtualGpu => "virtual GPU",
                    DeviceType::Cpu => "software adapter on the CPU",
                    DeviceType::Other => "other adapter",
                };
                let driver = [info.driver.as_str(), info.driver_info.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(Opened {
                    device,
                    description: format!(
                        "wgpu: {} ({:?}, {kind}{}{driver})",
                        info.name,
                        info.backend,
                        if driver.is_empty() { "" } else { ", driver " },
                    ),
                })
            }
            Ok(Ok(_)) => Err("the wgpu adapter computed a wrong result; use --device cpu".into()),
            Ok(Err(e)) => Err(none(&format!(": {e}"))),
            Err(_) => Err(none("")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in [
            "cpu",
            "wgpu",
            "wgpu:software",
            "wgpu:discrete:0",
            "wgpu:integrated:2",
            "wgpu:virtual:1",
        ] {
            let c: DeviceChoice = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
        assert_eq!(
            "wgpu:discrete".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Wgpu(Adapter::Discrete(0))
        );
        for bad in [
            "",
            "gpu",
            "wgpu:",
            "wgpu:discrete:x",
            "wgpu:software:1",
            "cpu:0",
            "wgpu:tpu",
        ] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(
                e.contains("unknown device") && e.contains("wgpu:software"),
                "{e}"
            );
        }
    }
}
