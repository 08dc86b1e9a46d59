//! The only module that names the concrete burn backends. The CPU (burn's `flex` backend) is
//! always compiled in and is the default; `--features wgpu` / `--features cuda` add a GPU that
//! `--device` chooses at run time ([`choose_device`]). Each op picks its path by its tensor's
//! device ([`on_host`]): the host kernels of this module for CPU tensors, burn's tensor ops for
//! the others.

use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};

mod activation;
mod conv;
mod dense;
mod fork;
mod layout;
mod lrt;
mod matmul;
mod norm;
mod pool;

/// A flex tensor's `f32` values, row-major (a copy only if it is not contiguous).
fn host(t: &burn_flex::FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous f32 tensor")
                .to_vec(),
        ),
    }
}

/// 2-d convolution without bias, `x: [n, c, h, w]`, `w: [o, c, kh, kw]` → `[n, o, oh, ow]`. On the
/// CPU backend it is im2col + GEMM per sample with a hand-written backward pass (`conv.rs`);
/// on GPU backends burn's own.
pub fn conv2d(x: Tensor<4>, w: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    if on_host(&x) {
        conv::conv2d(x, w, options)
    } else {
        burn::tensor::module::conv2d(x, w, None, options)
    }
}

/// Train-mode batch normalisation of `x: [n, c, ...]` per channel (axis 1), with the batch
/// statistics: the output, and the per-channel batch mean and biased variance as host values.
/// On the CPU backend one host op with its own backward pass (`norm.rs`); `None` on GPU
/// backends, where the caller composes burn's ops.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
) -> Option<(Tensor<D>, Vec<f32>, Vec<f32>)> {
    if !on_host(&x) {
        return None;
    }
    let (y, stats) = norm::batch_norm_train(x, gamma, beta)?;
    let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect();
    Some((y, f32s(&stats.0), f32s(&stats.1)))
}

/// Dense layer `act(x·Wᵀ + b)`, `x: [n, in]`, `w: [out, in]`, `b: [out]`, `act` a ReLU if
/// `relu`. On the CPU backend one host op with its own backward pass (`dense.rs`); on GPU
/// backends burn's matmul, add and relu.
pub fn dense(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>, relu: bool) -> Tensor<2> {
    if on_host(&x) {
        dense::dense(x, w, b, relu)
    } else {
        compose_dense(x, w, b, relu)
    }
}

/// [`dense`] composed of burn's ops.
///
/// When `W` is tracked by autodiff it is computed as `(W·xᵀ)ᵀ`: the backward pass then produces
/// `∂L/∂W = gᵀ·x` directly in `W`'s own `[out, in]` layout, whereas `x·(Wᵀ)` yields a transposed
/// gradient that costs a full copy of the weight matrix to flatten. Otherwise `x·Wᵀ`, whose
/// output is contiguous.
fn compose_dense(x: Tensor<2>, w: Tensor<2>, b: Option<Tensor<1>>, relu: bool) -> Tensor<2> {
    let y = if w.is_tracked() {
        w.matmul(x.transpose()).transpose()
    } else {
        x.matmul(w.transpose())
    };
    let y = match b {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    if relu {
        burn::tensor::activation::relu(y)
    } else {
        y
    }
}

/// Dense layer under the local reparameterisation trick: on the CPU backend one host op with its
/// own backward pass (`lrt.rs`), on GPU backends [`compose_lrt_dense`].
pub fn lrt_dense(
    x: Tensor<2>,
    theta: Tensor<2>,
    b: Tensor<1>,
    v: Tensor<2>,
    xi: Tensor<2>,
    eps: f32,
    relu: bool,
) -> Tensor<2> {
    if on_host(&x) {
        lrt::lrt_dense(x, theta, b, v, xi, eps, relu)
    } else {
        compose_lrt_dense(x, theta, b, v, xi, eps, relu)
    }
}

/// [`lrt_dense`] with the weight variance `a·θ⊙θ` for one scale `a: [1]` (on the CPU backend
/// computed inside the op, `lrt.rs`; on GPU backends [`compose_lrt_dense_scaled`]).
pub fn lrt_dense_scaled(
    x: Tensor<2>,
    theta: Tensor<2>,
    b: Tensor<1>,
    a: Tensor<1>,
    xi: Tensor<2>,
    eps: f32,
    relu: bool,
) -> Tensor<2> {
    if on_host(&x) {
        lrt::lrt_dense_scaled(x, theta, b, a, xi, eps, relu)
    } else {
        compose_lrt_dense_scaled(x, theta, b, a, xi, eps, relu)
    }
}

/// `act(x·θᵀ + b + √((x⊙x)·vᵀ + eps)⊙ξ)` with `x: [n, in]`, weight mean `θ` and variance `v`
/// `[out, in]`, bias `b: [out]` and the noise `ξ: [n, out]`, `act` a ReLU if `relu`: the dense
/// layer under the local reparameterisation trick composed of burn's ops.
pub fn compose_lrt_dense(
    x: Tensor<2>,
    theta: Tensor<2>,
    b: Tensor<1>,
    v: Tensor<2>,
    xi: Tensor<2>,
    eps: f32,
    relu: bool,
) -> Tensor<2> {
    let delta = compose_dense(x.clone() * x.clone(), v, None, false);
    let y = compose_dense(x, theta, Some(b), false) + (delta + eps).sqrt() * xi;
    if relu {
        burn::tensor::activation::relu(y)
    } else {
        y
    }
}

/// [`compose_lrt_dense`] with the weight variance `v = a·θ⊙θ`, `a: [1]`.
pub fn compose_lrt_dense_scaled(
    x: Tensor<2>,
    theta: Tensor<2>,
    b: Tensor<1>,
    a: Tensor<1>,
    xi: Tensor<2>,
    eps: f32,
    relu: bool,
) -> Tensor<2> {
    let v = theta.clone().powi_scalar(2) * a.reshape([1, 1]);
    compose_lrt_dense(x, theta, b, v, xi, eps, relu)
}

/// The devices a run can use: the CPU (burn's flex backend, served by this module's host
/// kernels) and the GPU backends compiled in (burn's own tensor ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU.
    Cpu,
    /// The first GPU through wgpu (Vulkan, Metal, DirectX 12).
    #[cfg(feature = "wgpu")]
    Wgpu,
    /// The first CUDA GPU.
    #[cfg(feature = "cuda")]
    Cuda,
}

impl DeviceChoice {
    /// The device of a `--device` value, when it is compiled in.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            DeviceChoice::Cpu,
            #[cfg(feature = "wgpu")]
            DeviceChoice::Wgpu,
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }

    /// Its `--device` value.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            #[cfg(feature = "wgpu")]
            DeviceChoice::Wgpu => "wgpu",
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda => "cuda",
        }
    }
}

static CHOSEN: std::sync::OnceLock<DeviceChoice> = std::sync::OnceLock::new();

/// Chooses the device of this process (once; the CPU when never called). Choosing again the
/// same device is a no-op; another one is an error naming both.
pub fn choose_device(choice: DeviceChoice) -> crate::error::Result<()> {
    let chosen = *CHOSEN.get_or_init(|| choice);
    if chosen == choice {
        open(choice)
    } else {
        Err(crate::error::Error::Config(format!(
            "--device {}: this run is on {}, and one process uses one device",
            choice.name(),
            chosen.name()
        )))
    }
}

/// Sets up the device's runtime once, so that a missing GPU is an error naming the flag
/// rather than a panic at the first tensor op (the wgpu runtime otherwise sets itself up lazily
/// and panics when no adapter answers).
fn open(choice: DeviceChoice) -> crate::error::Result<()> {
    static OPENED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let opened = OPENED.get_or_init(|| match choice {
        DeviceChoice::Cpu => Ok(()),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Device::wgpu_options()
            .init()
            .map(|_| ())
            .map_err(|e| format!("--device wgpu: no usable GPU adapter on this machine ({e})")),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Ok(()),
    });
    opened
        .clone()
        .map_err(|e| crate::error::Error::Config(one_line(&e)))
}

/// `s` on one line (an adapter's error can span several).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The chosen device (the CPU unless [`choose_device`] said otherwise).
pub fn chosen_device() -> DeviceChoice {
    CHOSEN.get().copied().unwrap_or(DeviceChoice::Cpu)
}

/// Whether tensor `t` (with or without autodiff) lives on the CPU device the host kernels
/// serve. A process on the CPU holds no other tensors, so only a GPU run looks at the device.
pub fn on_host<const D: usize>(t: &Tensor<D>) -> bool {
    chosen_device() == DeviceChoice::Cpu || t.device().inner() == Device::flex()
}

/// The device for evaluation (no autodiff).
pub fn device() -> Device {
    match chosen_device() {
        DeviceChoice::Cpu => Device::flex(),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Device::cuda(0),
    }
}

/// The device for training (autodiff on top of [`device`]).
pub fn train_device() -> Device {
    device().autodiff()
}

/// `relu(x)`; on the CPU backend a host op that keeps a channels-last map channels last
/// (`activation.rs`), on GPU backends burn's own.
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if on_host(&x) {
        activation::relu(x)
    } else {
        burn::tensor::activation::relu(x)
    }
}

/// `relu(a + b)` (a residual block's output); on the CPU backend one host op
/// (`activation.rs`), on GPU backends burn's ops.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if on_host(&a) {
        activation::add_relu(a, b)
    } else {
        burn::tensor::activation::relu(a + b)
    }
}

/// `(x, x)` for two readers of `x` (a residual block's branch and shortcut); on the CPU backend
/// their gradients are summed by a host op that keeps a channels-last map channels last
/// (`fork.rs`), on GPU backends by burn.
pub fn fork<const D: usize>(x: Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    if on_host(&x) {
        fork::fork(x)
    } else {
        (x.clone(), x)
    }
}

/// Whether a flex tensor `[n, c, h, w]` is stored channels last (`layout.rs`).
fn is_channels_last(t: &Tensor<4>) -> bool {
    flex_primitive(t).is_some_and(|ft| layout::order_of(&ft) == Some(layout::Order::Nhwc))
}

/// The flex tensor under a tensor on the CPU backend (with or without autodiff), if it holds
/// `f32` values.
fn flex_primitive<const D: usize>(t: &Tensor<D>) -> Option<burn_flex::FlexTensor> {
    t.clone()
        .without_autodiff()
        .try_into_primitive::<burn_flex::Flex>()
        .ok()
        .filter(|ft| ft.dtype() == burn::tensor::DType::F32)
}

/// `(x − μ)·s + β` per channel (axis 1) of `x: [n, c, h, w]`: eval-mode batch normalisation
/// with `s = γ/√(σ² + ε)`. Burn's ops, applied over `[n, h, w, c]` when `x` is stored channels
/// last, so that they run over its storage in order and keep that order.
pub fn channel_norm(x: Tensor<4>, mean: Tensor<1>, scale: Tensor<1>, beta: Tensor<1>) -> Tensor<4> {
    let c = mean.dims()[0];
    if is_channels_last(&x) {
        let per = |v: Tensor<1>| v.reshape([1, 1, 1, c]);
        let y = (x.permute([0, 2, 3, 1]) - per(mean)) * per(scale) + per(beta);
        return y.permute([0, 3, 1, 2]);
    }
    let per = |v: Tensor<1>| v.reshape([1, c, 1, 1]);
    (x - per(mean)) * per(scale) + per(beta)
}

/// 2-d max pooling; on the CPU backend a host kernel with its own backward pass (`pool.rs`), on
/// GPU backends burn's own.
pub fn max_pool2d(x: Tensor<4>, options: MaxPoolOptions<2>) -> Tensor<4> {
    if on_host(&x) {
        pool::max_pool2d(x, options)
    } else {
        burn::tensor::module::max_pool2d(x, options)
    }
}

/// The threads this process may use: `RAYON_NUM_THREADS`, else `SLURM_CPUS_PER_TASK` (the
/// cores SLURM gave the job), else the machine's available parallelism.
pub fn threads_available() -> usize {
    ["RAYON_NUM_THREADS", "SLURM_CPUS_PER_TASK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `f` on a thread of rayon's global pool (the caller waits). The CPU backend's parallel
/// GEMMs and element-wise kernels are rayon jobs: issued from a pool thread, that thread works
/// on them itself and the other workers are already awake, while from an outside thread every
/// call is injected and waits for a sleeping worker to wake up (measured: MLP train step
/// +5–10%, sparse-VD step +6–24%, alternating bench runs). The global pool's threads get the
/// main thread's 8 MiB stack.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // Only the first call configures the pool; later calls find it built.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads_available())
        .stack_size(8 << 20)
        .build_global();
    rayon::scope(|_| f())
}

/// How long an idle [`keep_warm`] helper keeps looking for work before it returns.
const WARM_IDLE: std::time::Duration = std::time::Duration::from_millis(1);

/// Helpers started by [`keep_warm`] and not yet returned.
static WARM_HELPERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// Set on threads that called [`keep_warm`]: a helper that lands on one returns at once,
    /// since that thread has work of its own to get back to.
    static WARM_CALLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps the other threads of rayon's pool looking for work between the parallel sections of
/// a train step, instead of letting them fall asleep after a few microseconds and paying a
/// futex wake-up (and the scheduler's latency) at the start of each section, as OpenMP does
/// with its spin-wait (measured: MLP train step +20%, curve +17%, variational +10%,
/// alternating bench runs; the kernel's wake-up path was a sixth of the step's CPU time in
/// perf). Tops up the pool with helper jobs that run other jobs as they appear
/// (`rayon::yield_now`) and return after `WARM_IDLE` (1 ms) without any, so an idle program or a
/// long serial stretch does not spin. A helper can run nested inside a job that waits for
/// another thread; it then returns once work runs out, so that job is delayed by at most
/// `WARM_IDLE`, never blocked. Results do not change: only which thread runs a job.
pub fn keep_warm() {
    use std::sync::atomic::Ordering::{AcqRel, Acquire};
    WARM_CALLER.set(true);
    let want = rayon::current_num_threads().saturating_sub(1);
    while WARM_HELPERS.load(Acquire) < want {
        WARM_HELPERS.fetch_add(1, AcqRel);
        rayon::spawn(|| {
            if !WARM_CALLER.get() {
                let mut idle_since = std::time::Instant::now();
                let mut idle_rounds = 0u32;
                loop {
                    match rayon::yield_now() {
                        Some(rayon::Yield::Executed) => idle_rounds = 0,
                        Some(rayon::Yield::Idle) => {
                            if idle_rounds == 0 {
                                idle_since = std::time::Instant::now();
                            }
                            idle_rounds += 1;
                            // The clock is read only now and then (it was 8% of a helper's time).
                            if idle_rounds.is_multiple_of(64) && idle_since.elapsed() >= WARM_IDLE {
                                break;
                            }
                            std::hint::spin_loop();
                        }
                        None => break,
                    }
                }
            }
            WARM_HELPERS.fetch_sub(1, AcqRel);
        });
    }
}

/// Elements per parallel task of the element-wise host passes (optimiser, curve points, the
/// variational pull-back). Each element is computed alone, and block sums are added in block
/// order, so the split never changes a result.
pub const PASS_BLOCK: usize = 1 << 14;

/// A new vector of `n` values written in parallel blocks of `block` elements (the last one
/// shorter): `f(i, dst)` writes block `i`, handed over uninitialised. Spares a new output the
/// zero fill of `vec![0.0; n]`, a pass over the whole buffer (feature-map outputs are
/// megabytes, past the caches).
///
/// # Safety
/// `f` must write every element of each block it is given.
unsafe fn par_new(
    n: usize,
    block: usize,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(block.max(1))
        .enumerate()
        .for_each(|(i, b)| f(i, b));
    // SAFETY: `f` wrote every element of every block, and the blocks cover `0..n`.
    unsafe { v.set_len(n) };
    v
}

/// Calls `f` with a tensor's values as a host `f32` slice, row-major. On the flex backend a
/// contiguous `f32` tensor (with or without autodiff) is read in place, without a copy; anything
/// else goes through one `to_data` copy. The training loop's optimiser and the variational fused
/// pass read every parameter and gradient each step, so the copies `to_data` makes (up to three
/// per tensor on flex) were a sixth of an MLP train step.
pub fn with_host<const D: usize, R>(t: &Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> R {
    if let Some(ft) = flex_primitive(t) {
        return f(&host(&ft));
    }
    let data = t.to_data().convert::<f32>();
    f(data.as_slice::<f32>().expect("f32 tensor data"))
}

/// [`with_host`] with the values in the order a flex tensor stores them (`layout.rs`).
fn with_stored<const D: usize, R>(t: &Tensor<D>, f: impl FnOnce(&[f32], layout::Order) -> R) -> R {
    if let Some(ft) = flex_primitive(t) {
        let (v, order) = layout::stored(&ft);
        return f(&v, order);
    }
    with_host(t, |v| f(v, layout::Order::Nchw))
}

/// A tensor's values as an owned row-major `f32` vector. On flex a tensor that is the only
/// owner of its contiguous `f32` buffer hands over that buffer without a copy, so the
/// optimiser updates parameters in place (a fresh megabyte-sized output is zero-filled and
/// page-faulted by the allocator before it is written); anything else is copied.
pub fn into_host_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.without_autodiff()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// `n` zeros on `device`, built from an `f32` vector, which the backend adopts as it is
/// (`Tensor::zeros` on flex allocates bytes and then copies them into an `f32`-aligned
/// buffer): e.g. the gradient of a parameter the graph did not reach.
pub fn zeros(n: usize, device: &Device) -> Tensor<1> {
    Tensor::from_data(burn::tensor::TensorData::new(vec![0.0f32; n], [n]), device)
}

/// [`with_host`] for several tensors at once: `f` gets their values in order.
pub fn with_hosts<const D: usize, R>(ts: &[&Tensor<D>], f: impl FnOnce(&[&[f32]]) -> R) -> R {
    fn nest<const D: usize, R>(
        ts: &[&Tensor<D>],
        done: &[&[f32]],
        f: &mut Option<impl FnOnce(&[&[f32]]) -> R>,
    ) -> R {
        match ts.split_first() {
            None => (f.take().expect("called once"))(done),
            Some((t, rest)) => with_host(t, |v| {
                let mut next = done.to_vec();
                next.push(v);
                nest(rest, &next, f)
            }),
        }
    }
    nest(ts, &[], &mut Some(f))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    /// `with_hosts` hands over every tensor's values, in order (none, one, several).
    /// Every block, the shorter last one included, lands at its place; an empty vector too.
    #[test]
    fn par_new_writes_blocks_in_place() {
        for (n, block) in [(0, 4), (10, 4), (12, 4), (3, 16)] {
            // SAFETY: every element of each block written.
            let v = unsafe {
                super::par_new(n, block, |i, b| {
                    for (j, x) in b.iter_mut().enumerate() {
                        x.write((i * block + j) as f32);
                    }
                })
            };
            assert_eq!(
                v,
                (0..n).map(|i| i as f32).collect::<Vec<_>>(),
                "{n} {block}"
            );
        }
    }

    #[test]
    fn with_hosts_reads_each_tensor_in_order() {
        let t =
            |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &device());
        let (a, b, c) = (t(vec![1.0, 2.0]), t(vec![3.0]), t(vec![4.0, 5.0, 6.0]));
        let got = with_hosts(&[&a, &b, &c], |vs| {
            vs.iter().map(|v| v.to_vec()).collect::<Vec<_>>()
        });
        assert_eq!(got, vec![vec![1.0, 2.0], vec![3.0], vec![4.0, 5.0, 6.0]]);
        assert_eq!(with_hosts::<1, usize>(&[], |vs| vs.len()), 0);
        assert_eq!(with_hosts(&[&b], |vs| vs[0][0]), 3.0);
    }

    /// `into_host_vec` gives a tensor's row-major values whether it owns its buffer alone (then
    /// without a copy, on flex), shares it (the other owner keeps its values) or is a strided
    /// view.
    #[test]
    fn into_host_vec_takes_or_copies_the_values() {
        let values: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let t = Tensor::<2>::from_data(TensorData::new(values.clone(), [2, 3]), &device());
        let shared = t.clone();
        let mut got = into_host_vec(t);
        assert_eq!(got, values);
        got[0] = 99.0;
        assert_eq!(with_host(&shared, <[f32]>::to_vec), values);
        assert_eq!(
            into_host_vec(shared.clone().transpose()),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        let alone = Tensor::<1>::from_data(TensorData::new(values.clone(), [6]), &device());
        let at = with_host(&alone, |v| v.as_ptr() as usize);
        let taken = into_host_vec(alone);
        assert_eq!(taken, values);
        assert_eq!(
            taken.as_ptr() as usize,
            at,
            "a sole owner's buffer is handed over"
        );
        let _ = at;
    }

    /// Contiguous, transposed (strided), sliced and autodiff-tracked tensors all read as their
    /// row-major values.
    #[test]
    fn with_host_reads_row_major_values_of_any_layout() {
        let values: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let t = Tensor::<2>::from_data(TensorData::new(values.clone(), [2, 3]), &device());
        assert_eq!(with_host(&t, <[f32]>::to_vec), values);
        assert_eq!(
            with_host(&t.clone().transpose(), <[f32]>::to_vec),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        assert_eq!(
            with_host(&t.clone().slice([1..2, 0..3]), <[f32]>::to_vec),
            vec![3.0, 4.0, 5.0]
        );
        let tracked =
            Tensor::<2>::from_data(TensorData::new(values.clone(), [2, 3]), &train_device())
                .require_grad();
        let y = tracked.clone() * 2.0;
        assert!(y.is_tracked());
        assert_eq!(
            with_host(&y, <[f32]>::to_vec),
            values.iter().map(|v| v * 2.0).collect::<Vec<_>>()
        );
    }
}
