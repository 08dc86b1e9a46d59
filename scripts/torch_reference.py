#!/usr/bin/env python3
"""PyTorch CPU reference benchmark for modeconn's Rust (burn) training loop.

Measures the throughput of the same loop that the Rust benchmark runs, so that the README can state
the speed ratio Rust/PyTorch measured on one machine in one run:

* models (10 classes, PyTorch default initialisation), the layouts of modeconn's ``src/arch/``:
  - ``mlp`` (input 1x28x28): 784-300-100-10, ReLU after the two hidden layers;
  - ``lenet5`` (LeNet-5-Caffe, input 1x28x28): conv 5x5 1->20, ReLU, maxpool 2, conv 5x5 20->50,
    ReLU, maxpool 2, fc 800->500, ReLU, fc 500->10;
  - ``vgg16bn`` (modeconn's ``vgg16:w=0.25``, input 3x32x32): thirteen 3x3 convolutions (padding 1,
    no bias) each followed by BatchNorm and ReLU, 16-16 | 32-32 | 64-64-64 | 128-128-128 |
    128-128-128 channels, a 2x2 maxpool after each of the five blocks, then fc 128->128, ReLU,
    fc 128->128, ReLU, fc 128->10 (956,154 trainable parameters, 2,112 running statistics);
  - ``resnet20`` (input 3x32x32): 3x3 stem convolution 3->16 + BN + ReLU, three stages of three
    basic blocks ``relu(bn2(conv2(relu(bn1(conv1(x))))) + s(x))`` with 16, 32, 64 channels (3x3
    convolutions without bias; the first block of stages 2 and 3 has stride 2 and a projection
    shortcut ``s`` = 1x1 convolution with stride 2 + BN, the others the identity), global average
    pooling, fc 64->10 (272,474 trainable parameters, 1,568 running statistics);
  the parameter and running-statistic counts are checked against modeconn's layouts at start-up;
* ``<model>_train``: one SGD step at batch 128 = forward (BatchNorm in train mode: batch
  statistics, running statistics updated), mean cross-entropy, backward,
  SGD(lr=0.01, momentum=0.9) step (gradients reset to None before each step); the vgg16bn and
  resnet20 steps also have the weight decay of modeconn's bench step (``--wd``, 5e-4, applied by
  the optimiser to every parameter, BatchNorm's included), the mlp and lenet5 steps none;
* ``<model>_eval``: forward under ``torch.no_grad()`` in eval mode (BatchNorm with its running
  statistics) plus argmax, at batch 1000;
* data: synthetic and fixed, x ~ N(0, 1) and labels uniform in 0..9 from a seeded generator, built
  once before timing (no data loading, no host-to-device copies are measured);
* protocol: ``--warmup`` untimed steps, then timed steps until at least ``--min-time`` seconds have
  passed (and at least ``--min-steps`` steps), or exactly ``--steps N``; with ``--repeats R`` the
  timed window is run R times and the median is reported;
* intra-op threads: ``torch.set_num_threads(2)`` unless ``--threads`` says otherwise.

Reported per result: steps/s, samples/s (= steps/s x batch), ms/step, and an estimated GFLOP/s
(2 FLOP per multiply-add of the Linear/Conv2d layers; a train step counted as 3x the forward).

Usage (after ``bash scripts/setup-torch.sh``)::

    .venv-torch/bin/python scripts/torch_reference.py                  # all eight, table
    .venv-torch/bin/python scripts/torch_reference.py --json torch.json --repeats 3
    .venv-torch/bin/python scripts/torch_reference.py --only lenet5_train --steps 200

Timings are wall-clock: run it on an otherwise idle machine (the load average before and after is
printed and stored in the JSON so that a noisy run can be recognised).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - message for a missing venv
    sys.exit("torch is not importable: run `bash scripts/setup-torch.sh` and use .venv-torch/bin/python")

BENCHMARKS = ("mlp_train", "mlp_eval", "lenet5_train", "lenet5_eval",
              "vgg16bn_train", "vgg16bn_eval", "resnet20_train", "resnet20_eval")


class MLP(nn.Module):
    """784-300-100-10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5-Caffe (20-50-500-10) with ReLU after both convolutions and the hidden fc layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 20x24x24 -> 20x12x12
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 50x8x8 -> 50x4x4
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def conv_bn(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free convolution (padding 1 for 3x3, 0 for 1x1) and its BatchNorm."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(c_out)


class VGG16BN(nn.Module):
    """modeconn's ``vgg16:w=0.25`` (norm=bn, input 3x32x32): 13 conv-BN-ReLU in blocks of
    2/2/3/3/3 with 64w..512w channels (w = 0.25, rounded), a 2x2 maxpool after each block,
    fc 512w -> 512w -> 512w -> 10 with ReLU after the two hidden ones. Module names are
    modeconn's parameter names (conv1..conv13, bn1..bn13, fc1..fc3)."""

    BLOCKS = (2, 2, 3, 3, 3)

    def __init__(self, width: float = 0.25, classes: int = 10) -> None:
        super().__init__()
        scaled = lambda c: max(1, int(c * width + 0.5))  # noqa: E731 - as Vgg::scaled
        channels = [scaled(c) for c, n in zip((64, 128, 256, 512, 512), self.BLOCKS) for _ in range(n)]
        c_in = 3
        for i, c in enumerate(channels, 1):
            conv, bn = conv_bn(c_in, c)
            setattr(self, f"conv{i}", conv)
            setattr(self, f"bn{i}", bn)
            c_in = c
        f = scaled(512)
        self.fc1 = nn.Linear(c_in, f)  # 32x32 after five pools: 1x1
        self.fc2 = nn.Linear(f, f)
        self.fc3 = nn.Linear(f, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        for n in self.BLOCKS:
            for _ in range(n):
                i += 1
                x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            x = F.max_pool2d(x, 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, the shortcut a 1x1 convolution
    with BatchNorm where the shape changes (projection), else the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, c_out, stride)
        self.conv2, self.bn2 = conv_bn(c_out, c_out)
        projection = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, stride, kernel=1)) if projection else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """modeconn's ``resnet20`` (input 3x32x32): stem conv 3->16 + BN + ReLU, three stages of three
    basic blocks (16, 32, 64 channels; stride 2 and a projection shortcut in the first block of
    stages 2 and 3), global average pooling, fc 64->10. Names as modeconn's (``conv1``, ``bn1``,
    ``layer{k}.{j}.conv1|bn1|conv2|bn2|shortcut.0|shortcut.1``, ``fc``)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, 16)
        c_in = 16
        for k, c in enumerate((16, 32, 64), 1):
            blocks = []
            for j in range(3):
                blocks.append(BasicBlock(c_in, c, 2 if k > 1 and j == 0 else 1))
                c_in = c
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


MODELS = {"mlp": MLP, "lenet5": LeNet5, "vgg16bn": VGG16BN, "resnet20": ResNet20}

# Input [c, h, w] of each model.
INPUT = {"mlp": (1, 28, 28), "lenet5": (1, 28, 28), "vgg16bn": (3, 32, 32), "resnet20": (3, 32, 32)}

# (trainable parameters, running statistics) of modeconn's layouts (src/arch/*.rs: the layout's
# entries with roles Weight/Bias/NormScale/NormShift, and RunningMean/RunningVar).
LAYOUT_COUNTS = {
    "mlp": (266_610, 0),
    "lenet5": (431_080, 0),
    "vgg16bn": (956_154, 2_112),
    "resnet20": (272_474, 1_568),
}


def check_layout(model_name: str, model: nn.Module) -> tuple[int, int]:
    """Asserts that the model has the parameter and running-statistic counts of modeconn's
    layout; returns them."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    want = LAYOUT_COUNTS[model_name]
    if (params, stats) != want:
        raise AssertionError(f"{model_name}: {params} parameters + {stats} running statistics, "
                             f"modeconn's layout has {want[0]} + {want[1]}")
    return params, stats


def forward_macs_per_sample(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """Multiply-adds of the Linear and Conv2d layers for one sample of ``shape`` (found with hooks,
    in eval mode, so that BatchNorm's running statistics stay untouched)."""
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        else:
            kh, kw = module.kernel_size
            total += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def synthetic_batch(batch: int, shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    return x, y


def make_step(name: str, args: argparse.Namespace):
    """(step function, batch size, FLOPs per step, (parameters, running statistics)) for one
    benchmark name."""
    model_name, mode = name.split("_")
    torch.manual_seed(args.seed)
    model = MODELS[model_name]()
    counts = check_layout(model_name, model)
    shape = INPUT[model_name]
    macs = forward_macs_per_sample(model, shape)
    model.to(args.device)
    if mode == "train":
        x, y = (t.to(args.device) for t in synthetic_batch(args.batch, shape, args.seed + 1))
        wd = args.wd if model_name in ("vgg16bn", "resnet20") else 0.0
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=wd)
        model.train()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        return step, args.batch, 3 * 2 * macs * args.batch, counts

    x, y = (t.to(args.device) for t in synthetic_batch(args.eval_batch, shape, args.seed + 2))
    model.eval()

    def step() -> None:
        with torch.no_grad():
            model(x).argmax(dim=1)

    return step, args.eval_batch, 2 * macs * args.eval_batch, counts


def time_steps(step, args: argparse.Namespace) -> tuple[int, float]:
    """Run the timed window; returns (steps, seconds). On CUDA each step is waited for."""
    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    n = 0
    sync()
    t0 = time.perf_counter()
    while True:
        step()
        sync()
        n += 1
        elapsed = time.perf_counter() - t0
        if args.steps is not None:
            if n >= args.steps:
                return n, elapsed
        elif elapsed >= args.min_time and n >= args.min_steps:
            return n, elapsed


def run_benchmark(name: str, args: argparse.Namespace) -> dict:
    step, batch, flops_per_step, (params, stats) = make_step(name, args)
    for _ in range(args.warmup):
        step()
    runs = [time_steps(step, args) for _ in range(args.repeats)]
    rates = [n / s for n, s in runs]
    steps_per_s = statistics.median(rates)
    result = {
        "name": name,
        "batch_size": batch,
        "steps_per_s": steps_per_s,
        "samples_per_s": steps_per_s * batch,
        "ms_per_step": 1e3 / steps_per_s,
        "est_gflops": steps_per_s * flops_per_step / 1e9,
        "parameters": params,
        "running_stats": stats,
        "repeats": args.repeats,
        "runs": [{"steps": n, "seconds": s, "steps_per_s": n / s} for n, s in runs],
    }
    if name.endswith("_eval"):
        result.pop("steps_per_s")  # one eval "step" is one batch; samples/s is the figure to compare
        result["batches_per_s"] = steps_per_s
    return result


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def print_table(report: dict) -> None:
    print(f"\nPyTorch {report['torch_version']} {report['device']}, {report['threads']} threads, {report['cpu']}")
    header = f"{'benchmark':<15} {'batch':>6} {'steps/s':>10} {'ms/step':>9} {'samples/s':>12} {'GFLOP/s':>8}"
    if report["settings"]["repeats"] > 1:
        header += "   steps/s over repeats (min..max)"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        rate = r.get("steps_per_s", r.get("batches_per_s"))
        line = (f"{r['name']:<15} {r['batch_size']:>6} {rate:>10.1f} {r['ms_per_step']:>9.3f} "
                f"{r['samples_per_s']:>12.0f} {r['est_gflops']:>8.1f}")
        if r["repeats"] > 1:
            rates = [run["steps_per_s"] for run in r["runs"]]
            line += f"   {min(rates):.1f}..{max(rates):.1f}"
        print(line)
    print(f"load average before {report['loadavg_before']}, after {report['loadavg_after']} "
          f"(eval rows: steps/s = batches/s; GFLOP/s estimated, train = 3x forward)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda (scripts/gpu-check.sh)")
    p.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                   help=f"run only this benchmark (repeatable); one of {', '.join(BENCHMARKS)}")
    p.add_argument("--batch", type=int, default=128, help="train batch size")
    p.add_argument("--eval-batch", type=int, default=1000, help="eval batch size")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before timing")
    p.add_argument("--min-time", type=float, default=3.0, help="timed window: at least this many seconds")
    p.add_argument("--min-steps", type=int, default=10, help="timed window: at least this many steps")
    p.add_argument("--steps", type=int, default=None, help="timed window: exactly N steps (overrides --min-time)")
    p.add_argument("--repeats", type=int, default=1, help="timed windows per benchmark; the median is reported")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=5e-4,
                   help="weight decay of the vgg16bn and resnet20 train steps (the mlp and lenet5 steps have none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    for flag in ("threads", "batch", "eval_batch", "repeats", "min_steps"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    before = loadavg()
    results = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(run_benchmark(name, args))
    report = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "results": results,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "settings": {k: getattr(args, k) for k in
                     ("batch", "eval_batch", "warmup", "min_time", "min_steps", "steps", "repeats",
                      "lr", "momentum", "wd", "seed")},
    }
    print_table(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
