"""`neuralreg selftest` without a database: its report, its device rule, its exit status when the
device asked for is missing, and the throughput measurements at quick sizes (their figures are
printed, never asserted: only that they are measured)."""
import json

import pytest
import torch

from neuralreg_schema import selftest
from neuralreg_schema.compute import throughput


def test_rows_that_record_another_device_are_found():
    assert selftest.wrong_devices(["cpu"], "cpu") == []
    assert selftest.wrong_devices(["cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"], "cpu") == ["cuda:0 (NVIDIA H100 80GB HBM3)"]
    assert selftest.wrong_devices(["cuda:0 (NVIDIA H100 80GB HBM3)", "cuda:1 (NVIDIA H100 80GB HBM3)"], "cuda") == []
    assert selftest.wrong_devices(["cpu"], "cuda") == ["cpu"]


def test_the_report_fails_on_any_failed_row():
    said = []
    report = selftest.Report(said.append)
    report.add("kernels", "classifier:tiny", "fine", "PASS")
    report.add("throughput", "speed", "1 img/s")
    assert not report.failed
    report.add("study", "worker", "exit 1", "FAIL")
    assert [r["check"] for r in report.failed] == ["worker"]
    table = report.table()
    assert table.splitlines()[0].split() == ["part", "check", "status", "result"]
    assert "FAIL" in table and len(said) == 3


def test_non_finite_figures_are_written_as_strict_json():
    value = selftest._finite({"a": [float("inf"), 1.0], "b": float("nan"), "c": "x"})
    assert json.loads(json.dumps(value, allow_nan=False)) == {"a": ["inf", 1.0], "b": "nan", "c": "x"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_asking_for_cuda_without_a_gpu_fails(tmp_path):
    out = tmp_path / "selftest.json"
    said = []
    assert selftest.run("cuda", quick=True, json_path=str(out), say=said.append) == 1
    data = json.loads(out.read_text())
    assert not data["passed"] and data["device"] == "cuda"
    assert any(r["status"] == "FAIL" and "no CUDA device" in r["result"] for r in data["checks"])
    assert "selftest FAILED" in said[-1]


def test_throughput_at_quick_sizes_is_measured():
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step = throughput.classifier_step_ratio("demo", "cpu", "quick")
        pred = throughput.predictive_throughput("paper", "cpu", "quick")
        ddn = throughput.attack_throughput("ddn-l2", "cpu", "quick")
    finally:
        torch.set_num_threads(before)
    assert step["ratio"] > 0 and step["plain_s"] > 0 and step["stim_batch"] == 4 and step["width"] == 4
    assert pred["trials_per_s"] > 0 and pred["batch"] == 8 and pred["recipe"] == "paper"
    assert ddn["samples_per_s"] > 0 and ddn["sample_grads_per_s"] >= ddn["samples_per_s"] and ddn["samples"] == 8
    assert all(r["peak_mib"] > 0 and r["device"] == "cpu" for r in (step, pred, ddn))


def test_the_command_parses_its_options():
    from neuralreg_schema import cli
    args = cli.build_parser().parse_args(["selftest", "--device", "cpu", "--quick", "--json", "out.json"])
    assert (args.func, args.device, args.quick, args.json) == (cli.cmd_selftest, "cpu", True, "out.json")
    assert cli.build_parser().parse_args(["selftest"]).device is None        # cuda when available
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["selftest", "--device", "tpu"])
    assert exc.value.code == 2
