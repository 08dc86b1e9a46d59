#!/usr/bin/env bash
# Set up a CPU-only PyTorch in .venv-torch/ (repo root, git-ignored) for scripts/torch_reference.py.
#
# Only PyPI is reachable (no download.pytorch.org, so no "+cpu" wheels). The PyPI linux x86_64 torch
# wheel is a CUDA build: it pulls ~2-3 GB of nvidia-*/cuda-* packages, and its shared libraries are
# linked against them, so `pip install --no-deps torch` alone fails at import
# (libcudart.so.13 / libcublasLt.so.* not found). What this script does instead:
#
#   1. pip install --no-deps the pinned torch wheel (539 MB download, ~1.3 GB installed) plus the
#      small pure-Python packages torch imports (and numpy, so torch does not warn at import;
#      scipy for the linear assignments of scripts/torch_connect_e2e.py; safetensors for
#      scripts/make-torch-fixtures.py);
#   2. generate tiny stub .so files (a few KB each) for the CUDA libraries the wheel links against
#      and that are missing here (libcudart, libcublas, libcudnn, libnccl, ...). They export exactly
#      the symbols torch references (same sonames and symbol versions), and every stub function
#      fails; cudaGetDeviceCount reports 0 devices, so torch.cuda.is_available() is False. CPU code
#      never calls them. The stubs go into torch/lib/, the last entry of the wheel's RPATH, so real
#      nvidia packages, if ever installed into the venv, take precedence.
#   3. smoke test: import torch, a matmul, a conv2d forward/backward, no CUDA device.
#
# Idempotent: exits at once when the venv already passes the smoke test.
# Needs: python3 (3.11 here; torch 2.15 needs >= 3.11), and on Linux cc + readelf (binutils).
# Usage: bash scripts/setup-torch.sh      (env: PYTHON=python3, TORCH_VENV=<repo>/.venv-torch)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TORCH_VENV:-$ROOT/.venv-torch}"
PYTHON="${PYTHON:-python3}"

TORCH_PIN="torch==2.15.0"
DEPS_PINS=(
    filelock==4.2.12 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1
    jinja2==3.1.6 MarkupSafe==3.0.4 fsspec==2026.9.0 numpy==2.4.6 scipy==1.17.1
    safetensors==0.8.0
)

smoke_test() {
    "$VENV/bin/python" - <<'EOF'
import scipy.optimize  # weight matching in scripts/torch_connect_e2e.py
import torch
import torch.nn.functional as F
assert torch.randn(3) @ torch.randn(3) is not None
x = torch.randn(2, 1, 28, 28, requires_grad=True)
w = torch.randn(20, 1, 5, 5, requires_grad=True)
F.max_pool2d(F.relu(F.conv2d(x, w)), 2).sum().backward()
assert w.grad is not None and w.grad.shape == w.shape and x.grad is not None
assert not torch.cuda.is_available()
print(f"torch {torch.__version__} OK (CPU, {torch.get_num_threads()} threads)")
EOF
}

if [ -x "$VENV/bin/python" ] && smoke_test 2>/dev/null; then
    echo "setup-torch: $VENV already set up"
    exit 0
fi

echo "setup-torch: creating $VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps)
"${PIP[@]}" "${DEPS_PINS[@]}"
"${PIP[@]}" "$TORCH_PIN"

if ! smoke_test >/dev/null 2>&1 && [ "$(uname -s)" = Linux ]; then
    echo "setup-torch: torch does not import without the CUDA libraries; generating CPU-only stubs"
    TORCH_DIR="$("$VENV/bin/python" -c 'import sysconfig, os; print(os.path.join(sysconfig.get_paths()["purelib"], "torch"))')"
    "$VENV/bin/python" - "$TORCH_DIR" <<'EOF'
"""Write stub shared libraries for the CUDA libraries that torch's libraries need but are missing."""
import ctypes, glob, os, re, subprocess, sys, tempfile

torch_dir = sys.argv[1]
lib_dir = os.path.join(torch_dir, "lib")


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", path))


_found = {}
def on_system(name):
    if name not in _found:
        try:
            ctypes.CDLL(name)
            _found[name] = True
        except OSError:
            _found[name] = False
    return _found[name]


# The libraries `import torch` loads: the closure of NEEDED from torch._C and libtorch_global_deps.
roots = glob.glob(os.path.join(torch_dir, "_C*.so")) + [os.path.join(lib_dir, "libtorch_global_deps.so")]
deps, missing, todo = {}, set(), list(roots)
while todo:
    path = todo.pop()
    if path in deps:
        continue
    deps[path] = needed(path)
    for name in deps[path]:
        if os.path.exists(os.path.join(lib_dir, name)):
            todo.append(os.path.join(lib_dir, name))
        elif not on_system(name):
            missing.add(name)


def dyn_symbols(path):
    """(undefined non-weak [(sym, type, version)], defined {sym})."""
    undefined, defined = [], set()
    for line in readelf("--dyn-syms", path).splitlines():
        f = line.split(None, 7)
        if len(f) < 8 or not f[0].endswith(":"):
            continue
        _, _, _, typ, bind, _, ndx, name = f
        sym, _, ver = re.sub(r"\s*\(\d+\)$", "", name).partition("@")
        if ndx != "UND":
            defined.add(sym)
        elif bind != "WEAK" and sym:
            undefined.append((sym, typ, ver.lstrip("@")))
    return undefined, defined


def version_files(path):
    """{version name: library file} from the version-needs section."""
    out, cur = {}, None
    for line in readelf("-V", path).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"Name: (\S+)", line)
        if m and cur:
            out[m.group(1)] = cur
    return out


def stem(lib):  # libcusparseLt.so.0 -> cusparselt
    return lib[3:].split(".so")[0].lower()


syms = {path: dyn_symbols(path) for path in deps}
defined_by_torch = set().union(*(d for _, d in syms.values()))
stubs = {lib: {} for lib in missing}  # lib -> {sym: (type, version)}
for path, (undefined, _) in syms.items():
    vfiles = version_files(path)
    missing_here = sorted(n for n in deps[path] if n in missing)
    for sym, typ, ver in undefined:
        if ver:
            if vfiles.get(ver) in missing:
                stubs[vfiles[ver]].setdefault(sym, (typ, ver))
        elif missing_here and sym not in defined_by_torch and not sym.startswith(("Py", "_Py")):
            # unversioned: give it to the missing library whose name prefixes it (ncclSend -> libnccl)
            lib = max(missing_here, key=lambda n: len(stem(n)) if sym.lower().startswith(stem(n)) else -1)
            stubs[lib].setdefault(sym, (typ, ""))

MSG = "CUDA is not available: CPU-only stub library written by modeconn scripts/setup-torch.sh"
SPECIAL = {  # what a real runtime says on a machine without a GPU (cudaErrorNoDevice = 100)
    "cudaGetDeviceCount": "int cudaGetDeviceCount(int *n) { if (n) *n = 0; return 100; }",
}
with tempfile.TemporaryDirectory() as tmp:
    for lib, table in sorted(stubs.items()):
        src = [
            "/* Every stub returns a pointer to an error message at an odd address: it reads as a",
            "   non-zero (failure) status code, and as a string where a string is expected. */",
            '__attribute__((aligned(16))) static const char msg[] = "#%s";' % MSG,
        ]
        for sym, (typ, _) in sorted(table.items()):
            if sym in SPECIAL:
                src.append(SPECIAL[sym])
            elif typ in ("OBJECT", "TLS"):
                src.append("__attribute__((aligned(64))) char %s[256];" % sym)
            else:
                src.append("const char *%s(void) { return msg + 1; }" % sym)
        c_file = os.path.join(tmp, lib + ".c")
        with open(c_file, "w") as fh:
            fh.write("\n".join(src) + "\n")
        cmd = ["cc", "-shared", "-fPIC", "-O1", "-fno-builtin", "-w", "-Wl,-soname," + lib,
               "-o", os.path.join(lib_dir, lib), c_file]
        by_version = {}
        for sym, (_, ver) in table.items():
            by_version.setdefault(ver, []).append(sym)
        named = sorted(v for v in by_version if v)
        if named:  # unversioned references bind to the first version node
            nodes = []
            for i, ver in enumerate(named):
                body = by_version[ver] + (by_version.get("", []) if i == 0 else [])
                nodes.append("%s { global: %s; %s};" % (ver, "; ".join(sorted(body)), "local: *; " if i == 0 else ""))
            map_file = os.path.join(tmp, lib + ".map")
            with open(map_file, "w") as fh:
                fh.write("\n".join(nodes) + "\n")
            cmd.append("-Wl,--version-script=" + map_file)
        subprocess.run(cmd, check=True)
        print("  stub %-22s %4d symbols" % (lib, len(table)))

with open(os.path.join(lib_dir, "MODECONN-CUDA-STUBS.txt"), "w") as fh:
    fh.write("CPU-only stubs written by modeconn scripts/setup-torch.sh (not NVIDIA libraries):\n")
    fh.write("".join(lib + "\n" for lib in sorted(stubs)))
EOF
fi

smoke_test
echo "setup-torch: done; run: $VENV/bin/python scripts/torch_reference.py"
