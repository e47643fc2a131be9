"""benchmarks/scale.py's core at N = 2, for correctness, not speed: two real worker processes
(populate.worker.serve) on a throwaway table compute every key exactly once, each holds its 2
connections (work + heartbeat: populate.common.CONNECTIONS_PER_WORKER, measured by their ids), the
workers import no torch, and the schema is gone afterwards."""
import importlib.util

from tests.helpers import ROOT


def _scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_workers_compute_every_key_once(modules):
    from neuralreg_schema import settings
    from populate.common import CONNECTIONS_PER_WORKER
    scale = _scale()
    # 40 keys of 20 ms each: the run outlasts the 0.1 s heartbeat, so each watchdog opens its connection
    r = scale.run_scale(2, 40, heartbeat=0.1, work_ms=20, timeout=300)
    assert r["duplicates"] == 0, r
    assert r["make_calls"] == r["distinct"] == r["rows"] == r["completed"] == r["keys"] == 40, r
    assert r["errors"] == 0 and r["served_by"] >= 1, r
    assert r["connections_per_worker"] == r["connections_per_worker_min"] == CONNECTIONS_PER_WORKER, r
    assert 1 <= r["in_use"] <= CONNECTIONS_PER_WORKER * 2, r
    assert r["attempts"] == r["keys"] + r["conflicts"], r      # every reservation tried is won or lost
    assert not r["torch_imported"], "a worker on this table imports no torch"
    dj = settings.configure()
    assert r["schema"] not in dj.list_schemas(), "the throwaway schema is dropped"
