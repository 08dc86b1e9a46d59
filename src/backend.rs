//! The only file that names the concrete burn backend. The default is burn's `flex` CPU backend;
//! `--features wgpu` / `--features cuda` switch to a GPU (unsupported in CI).

use burn::tensor::Device;

/// The device for evaluation (no autodiff).
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    {
        Device::wgpu(0)
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    {
        Device::flex()
    }
}

/// The device for training (autodiff on top of [`device`]).
pub fn train_device() -> Device {
    device().autodiff()
}

/// Seeds burn's global generator (used only for noise drawn by burn itself, e.g. variational
/// sampling); every other random choice takes an explicit seeded RNG.
pub fn seed(device: &Device, seed: u64) {
    device.seed(seed);
}
