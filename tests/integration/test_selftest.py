"""`neuralreg selftest --device cpu --quick` end to end, as a lab runs it on a new node: every part
runs and passes, the tiny study goes through a real worker process in a throwaway prefix that is
dropped afterwards, one table and one JSON come out. And the study's verification can fail."""
import json

import pytest

from neuralreg_schema import pipeline, selftest
from tests.helpers import cli


@pytest.mark.slow          # real subprocesses and a worker training the tiny study: about 1.5 minutes
def test_quick_cpu_selftest_passes(modules, prefix, tmp_path):
    out = tmp_path / "selftest.json"
    run = cli(prefix, "--threads", "1", "selftest", "--device", "cpu", "--quick", "--json", str(out), timeout=600)
    assert run.returncode == 0, (run.stdout[-4000:], run.stderr[-3000:])
    assert "selftest PASSED on cpu" in run.stdout
    data = json.loads(out.read_text())
    assert data["passed"] and data["device"] == "cpu" and data["quick"]
    assert data["environment"]["torch_threads"] == 1
    checks = {(r["part"], r["check"]): r for r in data["checks"]}
    assert all(r["status"] in ("PASS", "INFO") for r in data["checks"])
    for net in ("classifier:tiny", "classifier:demo", "classifier:paper", "classifier:paper-resnet34",
                "predictive:tiny", "predictive:demo", "predictive:paper"):
        assert checks[("kernels", net)]["status"] == "PASS"
        assert net in run.stdout                                  # the table on the terminal
    assert {r["mode"] for r in data["numeric"]["precision"]} == {"features", "loss"}
    assert all(r["bound_holds"] for r in data["numeric"]["precision"])
    tp = data["numeric"]["throughput"]
    assert [r["recipe"] for r in tp["classifier"]] == ["demo", "paper"]
    assert [r["recipe"] for r in tp["predictive"]] == ["paper"]
    assert [r["attack"] for r in tp["attacks"]] == ["pgd-linf", "ddn-l2"]
    assert ("throughput", "peak memory") in checks
    study = data["study"]
    assert study["dropped"] and not study["empty_computed"] and not study["empty_other"]
    assert checks[("study", "every table populated")]["status"] == "PASS"
    assert set(study["devices"]) >= {"predictive.PredictiveModel", "classifier.RegularizedClassifier",
                                     "evaluation.NoiseRobustness", "evaluation.AttackResult"}
    assert all(devices == ["cpu"] for devices in study["devices"].values())
    assert study["prefix"] not in pipeline.existing_prefixes()      # the throwaway schemas are gone


def test_the_study_verification_can_fail(modules, prefix):
    """Against the session's prefix, verified for a GPU: its rows (if other tests made any) name the
    CPU, and where there are none the check fails too; tables nobody populated fail theirs."""
    said = []
    report = selftest.Report(said.append)
    found = selftest._verify_study(report, prefix, "cuda")
    failed = {r["check"] for r in report.failed}
    assert "every row records the device" in failed
    assert ("every table populated" in failed) == bool(found["empty_computed"] or found["empty_other"])
