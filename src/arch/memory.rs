//! Memory a run will need, estimated before anything is allocated, so that an architecture too
//! large for the machine is refused with one line instead of being killed by the kernel.
//!
//! Estimate: `copies · 4 · P` bytes for the weight-sized f32 buffers (weights, gradients,
//! optimiser state, curve control points, the checkpoint being written) plus
//! `4 · 4 · A · B` bytes of activations (pre- and post-activation values and their gradients for
//! `A` activations a sample and a batch of `B`, at least the evaluation batch).

use super::{Arch, lenet, resnet, vgg};
use crate::error::{Error, Result};

/// Weight-sized buffers of a plain training run besides the optimiser's state (weights,
/// gradients, the checkpoint, the evaluated copy).
pub const TRAIN_COPIES: usize = 4;

impl Arch {
    /// Number of parameters P.
    pub fn param_count(&self) -> u128 {
        self.layout()
            .entries()
            .iter()
            .map(|e| e.shape.iter().map(|&d| d as u128).product::<u128>())
            .sum()
    }

    /// Activations a sample produces in one forward pass (every layer's output, the input
    /// included).
    pub fn activations_per_sample(&self) -> u128 {
        match self {
            Arch::Mlp { widths, .. } => widths.iter().map(|&w| w as u128).sum(),
            Arch::LeNet5 { input, .. } => {
                let [c, h, w] = input.map(|d| d as u128);
                let (h1, w1) = (h.saturating_sub(4), w.saturating_sub(4));
                let (h2, w2) = ((h1 / 2).saturating_sub(4), (w1 / 2).saturating_sub(4));
                c * h * w
                    + 20 * h1 * w1
                    + 20 * (h1 / 2) * (w1 / 2)
                    + 50 * h2 * w2
                    + lenet::fc1_inputs(*input) as u128
                    + 500
                    + 10
            }
            Arch::Vgg(v) => vgg::activations_per_sample(v) as u128,
            Arch::ResNet(r) => resnet::activations_per_sample(r) as u128,
        }
    }

    /// Estimated bytes of a run holding `copies` weight-sized buffers and batches of `batch`.
    pub fn estimated_bytes(&self, copies: usize, batch: usize) -> u128 {
        let batch = batch.max(crate::eval::EVAL_BATCH) as u128;
        4 * copies as u128 * self.param_count() + 16 * self.activations_per_sample() * batch
    }

    /// Errors with one line naming the architecture and the estimate when
    /// [`Arch::estimated_bytes`] exceeds the memory available to this process (Linux:
    /// `MemAvailable`, and the cgroup's limit when one is set; elsewhere no check).
    pub fn check_memory(&self, copies: usize, batch: usize) -> Result<()> {
        let need = self.estimated_bytes(copies, batch);
        match available_bytes() {
            Some(have) if need > have as u128 => Err(Error::Config(format!(
                "--arch {self}: {} parameters need about {} (weights, gradients, optimiser state \
                 and activations) but {} is available",
                self.param_count(),
                gib(need),
                gib(have as u128)
            ))),
            _ => Ok(()),
        }
    }
}

fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Bytes of memory this process may still allocate, where the system says.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut avail = avail_kib.saturating_mul(1024);
    let cgroup = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    if let (Some(max), Some(cur)) = (cgroup("memory.max"), cgroup("memory.current")) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_the_layout() {
        let a: Arch = "mlp:784-300-100-10".parse().unwrap();
        assert_eq!(
            a.param_count(),
            784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
        );
        assert_eq!(a.activations_per_sample(), 784 + 300 + 100 + 10);
        let l: Arch = "lenet5".parse().unwrap();
        // LeNet-5-Caffe on 28×28: 430,500 parameters (Molchanov et al. 2017, Table 1: 431K).
        assert_eq!(
            l.param_count(),
            20 * 25 + 20 + 50 * 20 * 25 + 50 + 500 * 800 + 500 + 10 * 500 + 10
        );
        assert_eq!(
            l.activations_per_sample(),
            784 + 20 * 24 * 24 + 20 * 12 * 12 + 50 * 8 * 8 + 800 + 500 + 10
        );
    }

    #[test]
    fn a_huge_network_is_refused_before_allocation() {
        let a: Arch = "mlp:64-2000000000-10".parse().unwrap();
        assert!(a.estimated_bytes(TRAIN_COPIES + 1, 128) > 1u128 << 40);
        if available_bytes().is_some() {
            let e = a.check_memory(TRAIN_COPIES, 128).unwrap_err().to_string();
            assert!(
                e.contains("mlp:64-2000000000-10") && e.contains("GiB"),
                "{e}"
            );
        }
        let small: Arch = "mlp:64-128-10".parse().unwrap();
        small.check_memory(TRAIN_COPIES, 128).unwrap();
    }
}
