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


def test_a_heartbeat_waits_for_no_other_workers_job(modules):
    """Found by the benchmark at 64 workers on MariaDB: the heartbeat's UPDATE ... WHERE status =
    'reserved' AND host AND pid locked every reserved row it scanned, and deadlocked with another worker
    finishing its job (DataJoint's UPDATE of the job row), which died of it. The heartbeat now stamps its
    own jobs by primary key: while another transaction holds a finishing job's row, a beat neither waits
    nor fails, and stamps this worker's job."""
    import time

    from neuralreg_schema import settings
    from populate import jobs, watchdog
    scale = _scale()
    dj = settings.configure()
    schema, item, echo = scale.declare(f"neuralreg_scale{__import__('uuid').uuid4().hex[:8]}")
    other = None
    try:
        item.insert([{"item": 0}, {"item": 1}])
        jobs.declare([echo])
        echo.jobs.refresh()
        assert watchdog.reserve_with_lease(echo.jobs, {"item": 0})
        echo.jobs.update1({"item": 0, "host": "elsewhere", "pid": 1})       # another worker's job
        assert watchdog.reserve_with_lease(echo.jobs, {"item": 1})           # this process's job
        qi = echo.connection.adapter.quote_identifier
        name = echo.jobs.full_table_name
        stamp = f"SELECT {qi('completed_time')} FROM {name} WHERE {qi('item')} = 1"
        before = echo.connection.query(stamp).fetchall()[0][0]
        other = watchdog.side_connection()                # the other worker, finishing item 0
        other.start_transaction()
        other.query(f"UPDATE {name} SET {qi('status')} = 'success' WHERE {qi('item')} = 0")

        def short_waits():
            conn = watchdog.side_connection()
            if settings.backend(dj) == "mysql":
                conn.query("SET SESSION innodb_lock_wait_timeout = 5")
            else:
                conn.query("SET lock_timeout = '5s'")
            return conn

        dog = watchdog.Watchdog([echo], echo.connection, interval=3600, connect=short_waits)
        time.sleep(0.01)
        started = time.monotonic()
        dog.beat()                                        # the old UPDATE waited here, then failed
        assert time.monotonic() - started < 4
        after = echo.connection.query(stamp).fetchall()[0][0]
        assert after > before and dog.beats == 1
    finally:
        if other is not None:
            other.cancel_transaction()
            other.close()
        schema.drop(prompt=False)
