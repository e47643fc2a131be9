"""Where and how torch computes: device, CPU threads, OpenMP waiting, and the memory format of inputs.

One small module shared by every trainer, the attacks and the noise evaluation (never imports
datajoint). Its neighbours in the shared layer: `errors.py` (TrainingError), `serialization.py`
(JSON-ready values, torch.save bytes, format numbers), `modes.py` (temporary eval / BatchNorm modes)
and `training.py` (the trainer contract and the resumable TrainingState).

CPU threads
-----------
`cpu_budget()` is the number of CPUs this process may use: its affinity mask, capped by the cgroup
CPU quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us / cpu.cfs_period_us`), rounded down, at
least 1. `default_threads(workers)` divides that budget among the workers on the machine. The worker
and the CLI call `configure_threads(n)` once at start; the trainers then use `torch.get_num_threads()`
as configured, capped at the budget (`torch_threads`).

OpenMP waiting: torch's CPU wheel runs its intra-op threads on GNU OpenMP, whose idle threads spin at
every barrier. When another process holds a core, a spinning thread burns the time slice the thread
it waits for needs: a 2-core training epoch measured 3 s alone and 58-69 s beside one CPU-bound
process. `OMP_WAIT_POLICY=PASSIVE` makes waiting threads sleep instead. libgomp reads the variable
once, when it is loaded (with torch), so `prefer_passive_openmp()` must run before torch is imported:
the package's `__init__` calls it. A value the user set is kept (`OMP_WAIT_POLICY=ACTIVE` is the
choice for a machine that runs nothing else).

Memory format (the oneDNN defect)
---------------------------------
oneDNN 3.x's 1x1 convolution backward-weights kernel for channels-last (NHWC) tensors with stride 2
and fewer than 8 input channels hangs, segfaults (one thread) or returns wrong weight gradients
(oneDNN issue 6035; seen with torch 2.13.0 on this CPU). On the CPU every network here therefore runs
NCHW, chosen explicitly: a (B, 1, H, W) tensor made by permuting a (B, H, W, 1) one has strides
(HW, 1, W, 1), which count as NCHW- *and* NHWC-contiguous; `.contiguous()` keeps them, and the first
convolution then propagates channels-last through the whole network. `as_nchw` copies such a tensor
into the standard strides (HW, HW, W, 1), which convolutions treat as NCHW. `prepare_input` is what
every model's input goes through: channels-last on a GPU (where it is fast and correct), NCHW on the
CPU.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Union


def prefer_passive_openmp() -> None:
    """Sleep, not spin, in OpenMP waits (see the module docstring), unless the user chose a policy.
    Effective only before torch (libgomp) is loaded."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ------------------------------------------------------------------ CPU budget and threads


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 cpu.max or v1 cfs quota / period), None if unlimited
    or unknown."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def cpu_budget(cgroup_root: Union[str, Path] = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup quota; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(Path(cgroup_root))
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def default_threads(workers: int = 1, budget: int | None = None) -> int:
    """Intra-op threads for one of `workers` processes sharing this machine's CPU budget."""
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    budget = cpu_budget() if budget is None else int(budget)
    return max(1, budget // int(workers))


def workers_on_machine() -> int:
    """How many workers share this machine: $NEURALREG_WORKERS (set it when starting several), else 1."""
    value = os.environ.get("NEURALREG_WORKERS", "").strip()
    if not value:
        return 1
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"NEURALREG_WORKERS must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"NEURALREG_WORKERS must be a positive integer, got {value!r}")
    return n


def configure_threads(threads: int | None = None, workers: int | None = None) -> int:
    """Set torch's intra-op threads for this process: `threads` when given (--threads), else the CPU
    budget divided by the workers on the machine. Returns the number set."""
    import torch
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        n = int(threads)
    else:
        n = default_threads(workers if workers is not None else workers_on_machine())
    torch.set_num_threads(n)
    return n


@contextmanager
def torch_threads(device) -> Iterator[None]:
    """On the CPU, cap torch's intra-op threads at the CPU budget for the block; restored after."""
    import torch
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(max(1, min(before, cpu_budget())))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ device


def resolve_device(device=None):
    """None -> 'cuda' if available else 'cpu'; a string or torch.device as given."""
    import torch
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def describe_device(device) -> str:
    """'cpu' or e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


# ------------------------------------------------------------------ memory format


def is_standard_nchw(x) -> bool:
    """True when the tensor has the default row-major strides (every dimension's, size-1 ones
    included): the layout convolutions treat as NCHW."""
    expected, step = [], 1
    for size in reversed(x.shape):
        expected.append(step)
        step *= size
    return tuple(x.stride()) == tuple(reversed(expected))


def as_nchw(x):
    """`x` itself when it has standard NCHW strides, else a copy that has them (see the module
    docstring: ambiguous strides make the CPU convolutions run channels-last)."""
    import torch
    if x.dim() != 4 or is_standard_nchw(x):
        return x
    return x.clone(memory_format=torch.contiguous_format)


def autocast(device):
    """bf16 autocast on a GPU, nothing on the CPU (where the networks train in float32)."""
    import torch
    device = torch.device(device)
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def prepare_input(x, device=None):
    """A network's input in the format chosen for its device: channels-last on a GPU, NCHW on the CPU."""
    import torch
    device = x.device if device is None else torch.device(device)
    if x.dim() != 4:
        return x
    if device.type == "cuda":
        return x.contiguous(memory_format=torch.channels_last)
    return as_nchw(x)


# ------------------------------------------------------------------ environment


def _driver_version() -> str | None:
    """The NVIDIA driver's version from nvidia-smi (None without one; 5 s at most)."""
    import shutil
    import subprocess
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(device=None) -> dict:
    """What computes here: torch, CUDA, cuDNN, the NVIDIA driver, the device's name and memory, the CPU
    budget and torch's threads (a JSON-ready dict; None where a part is absent)."""
    import platform

    import torch
    dev = resolve_device(device)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "driver": _driver_version(), "device": describe_device(dev), "device_memory_gib": None,
           "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
           "cpu_budget": cpu_budget(), "cpus_on_machine": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "onednn": torch.backends.mkldnn.is_available(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "machine": platform.machine(), "processor": platform.processor() or None}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env["device_memory_gib"] = round(props.total_memory / 2 ** 30, 1)
        env["compute_capability"] = f"{props.major}.{props.minor}"
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    return env
