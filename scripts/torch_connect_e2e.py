#!/usr/bin/env python3
"""PyTorch CPU reference of the end-to-end MNIST connectivity experiment, step for step what
``scripts/e2e-connect.sh`` runs with modeconn, for the side-by-side time in the README:

1. two endpoints, MLP 784-300-100-10 (PyTorch default init, seeds 1 and 2): SGD momentum 0.9,
   lr 0.05, L2 weight decay 5e-4 (coupled, as ``torch.optim.SGD(weight_decay=...)``), cosine
   schedule per epoch ``lr_e = 0.05 * (1 + cos(pi e / E)) / 2``, batch 128 (last batch partial),
   reshuffled every epoch, 20 epochs; after every epoch the test set (10k) is evaluated; at the
   end the full training set and the test set;
2. a one-bend polygonal chain and a quadratic Bezier curve between them (bend initialised at the
   midpoint, endpoints frozen): per minibatch ``t ~ U(0, 1)``, loss = CE(w(t)) + 0.5 * 5e-4 *
   ||w(t)||^2, SGD momentum 0.9 on the bend, lr 0.05 with Garipov's schedule (1 until 50% of the
   epochs, linear to 0.01 at 90%, flat after), 20 epochs, the midpoint evaluated on the test set
   after every epoch;
3. weight matching of w2 to w1 (Git Re-Basin: coordinate descent over the hidden-layer
   permutations, each a linear assignment, until no sweep improves);
4. 61-point paths (line, chain, Bezier, matched line) on the 10k test set and the first 10k
   training samples, batch 1000, under ``torch.no_grad()``.

Pixels in [0, 1], 2 intra-op threads. Prints the time of each stage and the total, and the
line/curve barriers (maximum test error) so that the two runs can be compared for sanity.

    .venv-torch/bin/python scripts/torch_connect_e2e.py [--data data/mnist] [--epochs 20] [--json F]
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

WIDTHS = [784, 300, 100, 10]


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data: Path):
    x = lambda n: torch.from_numpy(read_idx(data / n).reshape(-1, 784).astype(np.float32) / 255.0)
    y = lambda n: torch.from_numpy(read_idx(data / n).astype(np.int64))
    return (x("train-images-idx3-ubyte"), y("train-labels-idx1-ubyte"),
            x("t10k-images-idx3-ubyte"), y("t10k-labels-idx1-ubyte"))


def init(seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    params = []
    for i, o in zip(WIDTHS[:-1], WIDTHS[1:]):
        layer = torch.nn.Linear(i, o)
        params += [layer.weight.detach().clone(), layer.bias.detach().clone()]
    return params


def forward(p: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = x
    for k in range(0, len(p), 2):
        h = F.linear(h, p[k], p[k + 1])
        if k + 2 < len(p):
            h = F.relu(h)
    return h


@torch.no_grad()
def evaluate(p, x, y, batch=1000):
    loss, correct = 0.0, 0
    for s in range(0, len(x), batch):
        out = forward(p, x[s : s + batch])
        loss += F.cross_entropy(out, y[s : s + batch], reduction="sum").item()
        correct += (out.argmax(1) == y[s : s + batch]).sum().item()
    return loss / len(x), correct / len(x)


def cosine(e, epochs):
    return 0.5 * (1 + math.cos(math.pi * e / epochs))


def garipov(e, epochs):
    t = e / epochs
    return 1.0 if t <= 0.5 else (1.0 - (t - 0.5) / 0.4 * 0.99 if t <= 0.9 else 0.01)


def train_endpoint(seed, data, epochs, lr=0.05, wd=5e-4, batch=128):
    xtr, ytr, xte, yte = data
    params = [t.requires_grad_() for t in init(seed)]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    gen = torch.Generator().manual_seed(seed)
    for e in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr * cosine(e, epochs)
        order = torch.randperm(len(xtr), generator=gen)
        for s in range(0, len(xtr), batch):
            idx = order[s : s + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(forward(params, xtr[idx]), ytr[idx]).backward()
            opt.step()
        evaluate(params, xte, yte)
    p = [t.detach() for t in params]
    evaluate(p, xtr, ytr)
    evaluate(p, xte, yte)
    return p


def coeffs(kind, t):
    if kind == "chain":
        return (1 - 2 * t, 2 * t, 0.0) if t < 0.5 else (0.0, 2 - 2 * t, 2 * t - 1)
    return ((1 - t) ** 2, 2 * t * (1 - t), t * t)


def train_curve(kind, w1, w2, data, epochs, lr=0.05, wd=5e-4, batch=128, seed=0):
    xtr, ytr, xte, yte = data
    bend = [((a + b) / 2).clone().requires_grad_() for a, b in zip(w1, w2)]
    opt = torch.optim.SGD(bend, lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for e in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr * garipov(e, epochs)
        order = torch.randperm(len(xtr), generator=gen)
        for s in range(0, len(xtr), batch):
            idx = order[s : s + batch]
            t = torch.rand((), generator=gen).item()
            c = coeffs(kind, t)
            w = [c[0] * a + c[1] * m + c[2] * b for a, m, b in zip(w1, bend, w2)]
            loss = F.cross_entropy(forward(w, xtr[idx]), ytr[idx])
            loss = loss + 0.5 * wd * sum((v * v).sum() for v in w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            evaluate([0.25 * a + 0.5 * m + 0.25 * b if kind == "bezier" else m
                      for a, m, b in zip(w1, bend, w2)], xte, yte)
    return [m.detach() for m in bend]


def weight_matching(a, b, max_sweeps=100, seed=0):
    """Permutations of b's hidden units maximising sum_l <W_l^a, P_l W_l^b P_{l-1}^T>."""
    n_hidden = len(WIDTHS) - 2
    perms = [np.arange(WIDTHS[l + 1]) for l in range(n_hidden)]
    A = [t.double().numpy() for t in a]
    B = [t.double().numpy() for t in b]
    rng = np.random.default_rng(seed)
    best = -np.inf
    for _ in range(max_sweeps):
        for l in rng.permutation(n_hidden):
            wa, ba, wb, bb = A[2 * l], A[2 * l + 1], B[2 * l], B[2 * l + 1]
            if l > 0:
                wb = wb[:, perms[l - 1]]
            cost = wa @ wb.T + np.outer(ba, bb)
            na, nb = A[2 * l + 2], B[2 * l + 2]
            if l + 1 < n_hidden:
                nb = nb[perms[l + 1], :]
            cost += na.T @ nb
            _, cols = linear_sum_assignment(cost, maximize=True)
            perms[l] = cols
        total = 0.0
        for l in range(n_hidden + 1):
            wb = B[2 * l]
            bb = B[2 * l + 1]
            if l < n_hidden:
                wb, bb = wb[perms[l], :], bb[perms[l]]
            if l > 0:
                wb = wb[:, perms[l - 1]]
            total += (A[2 * l] * wb).sum() + (A[2 * l + 1] * bb).sum()
        if total <= best + 1e-12:
            break
        best = total
    out = []
    for l in range(n_hidden + 1):
        wb, bb = b[2 * l], b[2 * l + 1]
        if l < n_hidden:
            wb, bb = wb[perms[l], :], bb[perms[l]]
        if l > 0:
            wb = wb[:, perms[l - 1]]
        out += [wb.contiguous(), bb.contiguous()]
    return out


@torch.no_grad()
def path(points, kind, data, n=61):
    xtr, ytr, xte, yte = data
    sub_x, sub_y = xtr[:10000], ytr[:10000]
    errs = []
    for i in range(n):
        t = i / (n - 1)
        if len(points) == 2:
            w = [(1 - t) * a + t * b for a, b in zip(*points)]
        else:
            c = coeffs(kind, t)
            w = [c[0] * a + c[1] * m + c[2] * b for a, m, b in zip(*points)]
        evaluate(w, sub_x, sub_y)
        errs.append(1 - evaluate(w, xte, yte)[1])
    return max(errs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent / "data/mnist")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data)
    times = {}

    def stage(name, f, *a):
        t0 = time.perf_counter()
        r = f(*a)
        times[name] = time.perf_counter() - t0
        print(f"{name:<14} {times[name]:7.1f} s", flush=True)
        return r

    w1 = stage("train_w1", train_endpoint, 1, data, args.epochs)
    w2 = stage("train_w2", train_endpoint, 2, data, args.epochs)
    chain = stage("connect_chain", train_curve, "chain", w1, w2, data, args.epochs)
    bezier = stage("connect_bezier", train_curve, "bezier", w1, w2, data, args.epochs)
    w2m = stage("align", weight_matching, w1, w2)
    err = {}
    err["line"] = stage("path_line", path, (w1, w2), "line", data)
    err["chain"] = stage("path_chain", path, (w1, chain, w2), "chain", data)
    err["bezier"] = stage("path_bezier", path, (w1, bezier, w2), "bezier", data)
    err["matched_line"] = stage("path_matched", path, (w1, w2m), "line", data)
    total = sum(times.values())
    print(f"{'total':<14} {total:7.1f} s")
    print("max test error along: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in err.items()))
    if args.json:
        args.json.write_text(json.dumps({"impl": "pytorch", "times": times, "total": total,
                                         "max_test_err": err}, indent=2))


if __name__ == "__main__":
    main()
