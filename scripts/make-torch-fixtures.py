"""Makes the PyTorch fixtures of `modeconn import` / `export` (tests/fixtures/torch/), with a real
PyTorch: state_dicts saved by `torch.save` (.pt) and by safetensors, as a named module, as an
nn.Sequential (wrapped in `module.`, as DataParallel saves it), in float16, and with BatchNorm;
plus inputs and the logits PyTorch computes for them in eval mode (`expected.safetensors`).

    .venv-torch/bin/python scripts/make-torch-fixtures.py            (bash scripts/setup-torch.sh first)
    .venv-torch/bin/python scripts/make-torch-fixtures.py --check FILE.safetensors ARCH
        loads a file written by `modeconn export --to torch` into the matching module
        (strict) and prints its logits on the fixture inputs next to the expected ones.
"""

import argparse
import pathlib
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from torch_reference import LeNet5  # noqa: E402  (`lenet5` under modeconn's names, 1x28x28 input)

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch"


class MLP(nn.Module):
    """`mlp:64-16-10` under modeconn's names."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def mlp_sequential() -> nn.Sequential:
    """`mlp:64-16-10` as an nn.Sequential (names 0.*, 2.*)."""
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def mlp_bn_sequential() -> nn.Sequential:
    """`mlp:64-16-16-10:norm=bn`: Linear without bias -> BatchNorm1d -> ReLU blocks."""
    return nn.Sequential(
        nn.Linear(64, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 10),
    )


def make() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x64 = torch.rand(4, 64)
    x784 = torch.rand(2, 784)
    expected = {"x64": x64, "x784": x784}

    mlp = MLP().eval()
    torch.save(mlp.state_dict(), OUT / "mlp_named.pt")
    save_file(mlp.state_dict(), OUT / "mlp_named.safetensors")
    expected["mlp_named"] = mlp(x64).detach()

    seq = mlp_sequential().eval()
    torch.save({"module." + k: v for k, v in seq.state_dict().items()}, OUT / "mlp_sequential.pt")
    save_file(seq.state_dict(), OUT / "mlp_sequential.safetensors")
    expected["mlp_sequential"] = seq(x64).detach()
    half = {k: v.half() for k, v in seq.state_dict().items()}
    save_file(half, OUT / "mlp_sequential_f16.safetensors")
    seq16 = mlp_sequential().eval()
    seq16.load_state_dict({k: v.float() for k, v in half.items()})
    expected["mlp_sequential_f16"] = seq16(x64).detach()

    bn = mlp_bn_sequential()
    bn.train()
    with torch.no_grad():  # running statistics away from their initial 0 and 1
        for _ in range(5):
            bn(torch.rand(32, 64) * 3)
    bn.eval()
    torch.save(bn.state_dict(), OUT / "mlp_bn_sequential.pt")
    expected["mlp_bn_sequential"] = bn(x64).detach()

    lenet = LeNet5().eval()
    torch.save(lenet.state_dict(), OUT / "lenet5.pt")
    expected["lenet5"] = lenet(x784.view(-1, 1, 28, 28)).detach()

    save_file({k: v.contiguous() for k, v in expected.items()}, OUT / "expected.safetensors")
    print(f"wrote {OUT} (torch {torch.__version__})")


def check(path: str, arch: str) -> None:
    modules = {
        "mlp:64-16-10": (MLP, "x64", "mlp_named", (-1, 64)),
        "lenet5": (LeNet5, "x784", "lenet5", (-1, 1, 28, 28)),
    }
    make_module, x, name, shape = modules[arch]
    m = make_module().eval()
    m.load_state_dict(load_file(path), strict=True)
    expected = load_file(OUT / "expected.safetensors")
    got = m(expected[x].view(*shape)).detach()
    diff = (got - expected[name]).abs().max().item()
    print(f"{path}: loaded into {make_module.__name__} (strict); max |logit difference| {diff:.3g}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--check", nargs=2, metavar=("FILE", "ARCH"))
    a = p.parse_args()
    if a.check:
        check(*a.check)
    else:
        make()
