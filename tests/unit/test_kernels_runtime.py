"""The CPU kernels our networks run, against a slow reference; memory formats; thread sizing.

The kernel check runs in a subprocess with a timeout: the oneDNN defect it guards against hangs in
native code (compute/common/runtime.py), which would otherwise block the test run. It runs twice: with the
CPU's own instruction set, and with oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA), where the defective
kernel lives (an AVX-512 CPU otherwise never reaches it)."""
import os
import subprocess

import pytest
import torch

from neuralreg_schema.compute.classifier import augment
from neuralreg_schema.compute import kernelcheck
from neuralreg_schema.compute.common import runtime
from neuralreg_schema.compute.classifier import network
from neuralreg_schema.compute.classifier import resnet
from tests.helpers import run_python


def _run_kernelcheck(env_extra: dict, timeout: float, *args: str) -> str:
    env = {**os.environ, **env_extra}
    try:
        proc = run_python(["-X", "faulthandler", "-m", "neuralreg_schema.compute.kernelcheck", *args], env=env,
                          timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the kernel check hung for {timeout:.0f} s ({env_extra}); its output so far:\n{exc.stdout}")
    assert proc.returncode == 0, f"kernel check failed (rc {proc.returncode}, {env_extra}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("isa", ["native", "AVX2"])
def test_every_convolution_matches_the_reference_path(isa):
    """Every convolution of the tiny, demo and paper classifiers (ResNet18 and ResNet34) and predictive
    models, as one real training step feeds it: NCHW on the CPU, and forward output and weight
    gradient within 1e-3 (relative) of float64 with oneDNN disabled, 3 fresh repeats each."""
    out = _run_kernelcheck({} if isa == "native" else {"ONEDNN_MAX_CPU_ISA": isa}, 300, "--repeats", "3")
    assert "kernel check passed" in out
    for name in ("classifier:tiny", "classifier:demo", "classifier:paper", "classifier:paper-resnet34",
                 "predictive:tiny", "predictive:demo", "predictive:paper"):
        assert f"{name}: " in out and "all NCHW" in out.split(f"{name}: ")[1].splitlines()[0]


def test_check_conv_reports_a_wrong_kernel(monkeypatch):
    """The comparison itself fails loudly when the fast path is wrong (a conv2d that adds 1e-2)."""
    spec = kernelcheck.record_conv_inputs("predictive", "tiny")[0]
    real = torch.nn.functional.conv2d

    def off(*a, **k):
        out = real(*a, **k)
        return out + 1e-2 * out.abs().max() if a[0].dtype == torch.float32 else out
    monkeypatch.setattr(torch.nn.functional, "conv2d", off)
    with pytest.raises(AssertionError, match="output differs from the reference"):
        kernelcheck.check_conv(spec, repeats=1)


def _ambiguous_batch(b=4, h=32, w=32):
    """What crop_flip used to return: a (B, 1, H, W) permute of (B, H, W, 1), NCHW- and NHWC-contiguous."""
    return torch.rand(b, h, w, 1).permute(0, 3, 1, 2)


def test_ambiguous_strides_would_run_channels_last_and_the_guard_stops_it(monkeypatch):
    x = _ambiguous_batch()
    assert x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    assert not runtime.is_standard_nchw(x)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        assert not conv(x).is_contiguous()              # torch propagated channels-last: the hazard
    net = network.ClassifierNet("resnet18", 10, 4)
    found: list = []
    handles = kernelcheck._hooks(net, found)
    try:
        with torch.no_grad():
            net(x)
        assert found and all(s.standard_nchw for s in found)
        # the detector sees the hazard when the guard is switched off
        found.clear()
        monkeypatch.setattr(resnet, "as_nchw", lambda t: t)
        with torch.no_grad():
            net(x)
        assert any(not s.standard_nchw for s in found)
    finally:
        for handle in handles:
            handle.remove()


def test_crop_flip_returns_standard_nchw():
    batch = torch.rand(5, 1, 32, 32)
    b = len(batch)
    out = augment.crop_flip(batch, torch.zeros(b, dtype=torch.long), torch.full((b,), 8), torch.ones(b, dtype=torch.bool))
    assert runtime.is_standard_nchw(out)
    # the content is unchanged by the copy: crop offset (0, 8) of the 4-padded image, flipped
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    assert torch.equal(out, padded[:, :, 0:32, 8:40].flip(-1))


def test_prepare_input_and_as_nchw():
    x = _ambiguous_batch()
    y = runtime.prepare_input(x, "cpu")
    assert runtime.is_standard_nchw(y) and torch.equal(x, y)
    z = torch.rand(2, 3, 4, 5)
    assert runtime.as_nchw(z) is z                     # no copy when already standard
    assert runtime.as_nchw(torch.rand(3, 4)).shape == (3, 4)
    expanded = torch.rand(1, 1, 4, 5).expand(3, 1, 4, 5)
    assert runtime.is_standard_nchw(runtime.as_nchw(expanded))


def test_cpu_budget_reads_cgroup_quotas(tmp_path):
    cpus = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime.cpu_budget(tmp_path) == cpus
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert runtime.cpu_budget(tmp_path) == 1                     # 1.5 CPUs: one whole CPU
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cpu_budget(tmp_path) == cpus
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")              # half a CPU: still one thread
    assert runtime.cpu_budget(tmp_path) == 1
    assert runtime.cpu_budget(tmp_path / "absent") == cpus


def test_threads_divide_the_budget_among_workers(monkeypatch):
    assert runtime.default_threads(1, budget=8) == 8
    assert runtime.default_threads(3, budget=8) == 2
    assert runtime.default_threads(16, budget=8) == 1
    with pytest.raises(ValueError):
        runtime.default_threads(0, budget=8)
    monkeypatch.setenv("NEURALREG_WORKERS", "2")
    assert runtime.workers_on_machine() == 2
    monkeypatch.setenv("NEURALREG_WORKERS", "two")
    with pytest.raises(ValueError, match="NEURALREG_WORKERS"):
        runtime.workers_on_machine()
    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("NEURALREG_WORKERS", str(10 ** 6))
        assert runtime.configure_threads() == 1
        with pytest.raises(ValueError):
            runtime.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_openmp_waits_passively_unless_the_user_chose():
    code = "import os, neuralreg_schema, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = run_python(["-c", code], env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "PASSIVE", out.stderr[-2000:]
    out = run_python(["-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ACTIVE", out.stderr[-2000:]


def test_the_bf16_comparison_runs_under_autocast_and_can_fail():
    """A convolution the training step runs under bf16 autocast (on a GPU) is also compared in bf16:
    here on the CPU's autocast. Its error is bf16's (well above float32's, within BF16_RTOL), and a
    tolerance below it fails."""
    import dataclasses
    spec = dataclasses.replace(kernelcheck.record_conv_inputs("predictive", "tiny")[0], autocast=True)
    worst = kernelcheck.check_conv(spec, repeats=1)
    assert set(worst) == {"output", "weight_grad", "bf16_output", "bf16_weight_grad"}
    assert worst["bf16_output"] <= kernelcheck.BF16_RTOL and worst["bf16_weight_grad"] <= kernelcheck.BF16_RTOL
    assert worst["bf16_output"] > 10 * worst["output"]
    with pytest.raises(AssertionError, match="cpu bf16"):
        kernelcheck.check_conv(spec, repeats=1, bf16_rtol=1e-6)


def test_kernelcheck_writes_its_rows_as_json(tmp_path):
    import json
    out = tmp_path / "kernels.json"
    text = _run_kernelcheck({}, 120, "predictive:tiny", "--repeats", "1", "--device", "cpu", "--json", str(out))
    assert "kernel check passed" in text and "device cpu" in text
    data = json.loads(out.read_text())
    assert data["passed"] and len(data["rows"]) == 3
    assert all(r["network"] == "predictive:tiny" and r["device"] == "cpu" and r["layout"] == "NCHW"
               and r["output"] <= kernelcheck.FP32_RTOL for r in data["rows"])


def test_environment_names_what_computes():
    env = runtime.environment("cpu")
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["cpu_budget"] == runtime.cpu_budget() and env["torch_threads"] == torch.get_num_threads()
    assert {"cuda_build", "cudnn", "driver", "device_memory_gib", "gpus"} <= set(env)


def test_kernelcheck_names_each_wrong_network_and_exits_1(monkeypatch, tmp_path, capsys):
    """A wrong kernel fails every network that runs it, each named, the others still checked."""
    import json
    real = torch.nn.functional.conv2d

    def off(*a, **k):
        out = real(*a, **k)
        return out + 1e-2 * out.abs().max() if a[0].dtype == torch.float32 else out
    monkeypatch.setattr(torch.nn.functional, "conv2d", off)
    out = tmp_path / "kernels.json"
    assert kernelcheck.main(["predictive:tiny", "predictive:demo", "--repeats", "1", "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert not data["passed"] and len(data["errors"]) == 2 and not data["rows"]
    assert all("output differs from the reference" in e for e in data["errors"])
    assert "kernel check FAILED: 2 network(s)" in capsys.readouterr().out
