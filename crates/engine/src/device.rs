//! Device choice. libtorch's CUDA backend lives in `libtorch_cuda.so`, which the linker drops
//! from a binary that names no CUDA symbol (tch-rs issues #291 and #980): CUDA then reads as
//! unavailable even on a GPU machine. Before asking for CUDA we load that library ourselves, so
//! its static initialisers register the backend.

use std::sync::OnceLock;

use tch::{Device, Kind};

use crate::error::{EngineError, Result};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device '{other}' (expected auto, cpu or cuda)"
            )),
        }
    }
}

/// Loads `libtorch_cuda.so` once (found through the binary's rpath or `LD_LIBRARY_PATH`).
/// Returns why it could not, for the error message.
fn load_cuda_backend() -> std::result::Result<(), String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let mut names = vec!["libtorch_cuda.so".to_string()];
            if let Some(dir) = option_env!("BEAMLINE_LIBTORCH_LIB") {
                names.push(format!("{dir}/libtorch_cuda.so"));
            }
            let mut last = String::new();
            for name in names {
                // SAFETY: loading libtorch's own CUDA library runs its registration code, which
                // is what libtorch expects of a process that uses CUDA.
                match unsafe { libloading::Library::new(&name) } {
                    Ok(lib) => {
                        // Keep it loaded for the life of the process.
                        std::mem::forget(lib);
                        return Ok(());
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        })
        .clone()
}

/// Resolves the user's choice to a device.
pub fn resolve(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            load_cuda_backend().map_err(|e| {
                EngineError::Device(format!(
                    "CUDA was asked for but libtorch_cuda could not be loaded: {e}"
                ))
            })?;
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(EngineError::Device(
                    "CUDA was asked for but libtorch sees no CUDA device".into(),
                ))
            }
        }
        DeviceChoice::Auto => {
            let gpu_present = std::path::Path::new("/dev/nvidiactl").exists();
            if gpu_present && load_cuda_backend().is_ok() && tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Ok(Device::Cpu)
            }
        }
    }
}

/// The floating point type activations use on a device: float32 on the CPU, where libtorch's
/// bfloat16 kernels are slow, bfloat16 on CUDA.
pub fn compute_kind(device: Device) -> Kind {
    match device {
        Device::Cpu => Kind::Float,
        _ => Kind::BFloat16,
    }
}

/// A short name of the device, for reports.
pub fn name(device: Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        _ => "cuda",
    }
}

/// A tensor's memory as a float slice, when it is contiguous float32 on the CPU: what the host
/// kernels (`crate::cpu`) read weights and tables from.
pub fn host_floats(t: &tch::Tensor) -> Option<&[f32]> {
    host_slice::<f32>(t)
}

/// A tensor's memory as a slice of `T`, when it is contiguous on the CPU and of `T`'s kind.
pub fn host_slice<T: tch::kind::Element>(t: &tch::Tensor) -> Option<&[T]> {
    (t.kind() == T::KIND && t.device() == Device::Cpu && t.is_contiguous()).then(|| {
        // SAFETY: contiguous host memory of `numel` elements of `T`'s kind; the borrow of `t`
        // keeps it alive, and the engine never writes weights or tables after loading.
        unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
    })
}
