//! Where the operators run: `cpu` (burn-ndarray, `f64`) or `cuda[:i]` (burn-cuda, `f32`,
//! with the `cuda` cargo feature).
//!
//! Every operator, [`crate::TensorBlock`] and the solvers above them are generic over the
//! burn `Backend`, so a [`Device`] only chooses the backend type and its device handle; the
//! callers (the CLI, the bench harness) dispatch once at the top with [`Device::check`] first:
//!
//! ```
//! use ntk_ops::device::{Device, DeviceError};
//!
//! let cpu: Device = "cpu".parse()?;
//! assert_eq!(cpu, Device::Cpu);
//! cpu.check()?;
//! assert_eq!("cuda:1".parse::<Device>()?, Device::Cuda(1));
//! assert!(matches!("tpu".parse::<Device>(), Err(DeviceError::Unknown(_))));
//! # Ok::<(), DeviceError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The CUDA backend: burn-cuda (no kernel fusion, no autotune) in `f32`.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn_cuda::Cuda<f32, i32>;

/// burn-cuda in `f64`: slower, but its matmuls do not go through TF32 tensor cores (see the
/// conformance tests in ntk-gp).
#[cfg(feature = "cuda")]
pub type CudaBackendF64 = burn_cuda::Cuda<f64, i32>;

/// A CUDA device handle (re-exported from burn-cuda).
#[cfg(feature = "cuda")]
pub use burn_cuda::CudaDevice;

/// Whether this build includes the burn-cuda backend (the `cuda` cargo feature).
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// A compute device named on a command line: `cpu`, `cuda` (device 0) or `cuda:i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU (burn-ndarray, `f64`).
    #[default]
    Cpu,
    /// The CUDA device with this index (burn-cuda, `f32`).
    Cuda(usize),
}

/// Why a device cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DeviceError {
    /// The name is not `cpu`, `cuda` or `cuda:i`.
    #[error("unknown device `{0}`; use cpu or cuda[:i]")]
    Unknown(String),
    /// A CUDA device was asked for but the build has no CUDA backend.
    #[error("device `{0}`: built without the `cuda` feature; rebuild with --features cuda")]
    NotCompiled(Device),
    /// The CUDA backend is compiled in but the device could not be initialised (no driver,
    /// no GPU, index out of range).
    #[error("device `{device}`: CUDA is not available ({reason})")]
    Unavailable {
        /// The device asked for.
        device: Device,
        /// The driver's or runtime's message, on one line.
        reason: String,
    },
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for Device {
    type Err = DeviceError;

    /// Parses `cpu`, `cuda` or `cuda:i` (case-insensitive, surrounding space ignored). A CUDA
    /// name parses even without the `cuda` feature: [`Device::check`] says what is missing.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|i| i.parse::<usize>().ok())
                .map(Device::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl Device {
    /// Whether this is a CUDA device.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// `Ok` if the device can run the operators: always for the CPU; for CUDA, the backend must
    /// be compiled in ([`DeviceError::NotCompiled`]) and the device must initialise and run one
    /// small kernel ([`DeviceError::Unavailable`]), see `probe_cuda` (with the `cuda` feature).
    pub fn check(&self) -> Result<(), DeviceError> {
        match *self {
            Device::Cpu => Ok(()),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(DeviceError::NotCompiled(*self)),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => probe_cuda(i),
        }
    }
}

/// Whether backend `B` keeps its tensors in host memory, so that host code (GEMM on the
/// CPU, rayon loops) reads them without a transfer: the capability that selects the
/// host execution path of a [`Jacobian`](crate::Jacobian). Answered from `B`'s device
/// type (burn-ndarray's CPU device, autodiff on top included), never from its name.
pub fn computes_on_host<B: burn::prelude::Backend>() -> bool {
    std::any::TypeId::of::<B::Device>() == std::any::TypeId::of::<burn_ndarray::NdArrayDevice>()
}

/// Initialises CUDA device `index` and round-trips a small tensor through it.
///
/// burn-cuda (through cubecl and cudarc, which load `libcuda` at run time) panics when the
/// driver library is missing, no GPU is present or the index is out of range. The probe runs
/// under [`std::panic::catch_unwind`] with the panic hook silenced for its duration, and turns
/// a panic into [`DeviceError::Unavailable`] carrying the first line of the panic message.
/// The hook is process-global: do not call this while other threads may panic.
#[cfg(feature = "cuda")]
pub fn probe_cuda(index: usize) -> Result<(), DeviceError> {
    use burn::tensor::Tensor;

    let device = Device::Cuda(index);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        let dev = CudaDevice::new(index);
        let t = crate::convert::tensor1_from_f64::<CudaBackend>(vec![1.0, 2.0, 3.0], &dev);
        crate::convert::to_vec_f64(Tensor::sum(t.mul_scalar(2.0)))
    });
    std::panic::set_hook(hook);
    match result {
        Ok(v) if v.len() == 1 && (v[0] - 12.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(DeviceError::Unavailable {
            device,
            reason: format!("a test reduction returned {v:?} instead of [12.0]"),
        }),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("the CUDA runtime panicked during initialisation");
            Err(DeviceError::Unavailable {
                device,
                reason: msg.lines().next().unwrap_or_default().trim().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print() {
        for (s, d) in [
            ("cpu", Device::Cpu),
            (" CPU ", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:0", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(s.parse::<Device>(), Ok(d), "{s}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert_eq!(Device::Cpu.to_string(), "cpu");
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "cuda0", ""] {
            let e = bad.parse::<Device>().unwrap_err();
            assert_eq!(e, DeviceError::Unknown(bad.to_string()));
            assert!(e.to_string().contains("use cpu or cuda[:i]"), "{e}");
        }
        assert_eq!(Device::Cpu.check(), Ok(()));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_one_line_error() {
        let e = Device::Cuda(1).check().unwrap_err();
        assert_eq!(e, DeviceError::NotCompiled(Device::Cuda(1)));
        assert_eq!(
            e.to_string(),
            "device `cuda:1`: built without the `cuda` feature; rebuild with --features cuda"
        );
        const { assert!(!CUDA_COMPILED) };
    }

    /// With the feature but no usable GPU (set `NTK_TEST_CUDA=1` on a GPU machine instead), the
    /// probe's panic becomes a typed, one-line error; an out-of-range index fails either way.
    #[cfg(feature = "cuda")]
    #[test]
    fn an_unusable_cuda_device_is_a_one_line_error() {
        if std::env::var("NTK_TEST_CUDA").as_deref() == Ok("1") {
            // Only the good device here: a failed initialisation may poison the runtime's
            // global state for the rest of this process.
            Device::Cuda(0)
                .check()
                .expect("NTK_TEST_CUDA=1 needs a usable cuda:0");
            return;
        }
        for index in [0, 4096] {
            match Device::Cuda(index).check() {
                Ok(()) => println!("cuda:{index} is usable on this machine"),
                Err(e) => {
                    assert!(
                        matches!(e, DeviceError::Unavailable { device: Device::Cuda(i), .. } if i == index),
                        "{e:?}"
                    );
                    assert!(!e.to_string().contains('\n'), "{e}");
                    println!("cuda:{index}: {e}");
                }
            }
        }
        assert!(
            Device::Cuda(4096).check().is_err(),
            "no machine has 4097 GPUs"
        );
        const { assert!(CUDA_COMPILED) };
    }
}
