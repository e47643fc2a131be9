"""Job administration: jobs of dead workers are reclaimed, live ones are not (until their timeout);
errors are listed with their tracebacks and retried; ignored keys are skipped."""
import time

from neuralreg_schema import cli
from neuralreg_schema.compute.experiment import reliability
from populate import jobs, worker
from tests.helpers import make_recording, run_python

RESERVE_AND_DIE = """
import sys
from neuralreg_schema import pipeline
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron
key = {"animal_id": int(sys.argv[2]), "session": 1, "scan_idx": 1}
neuron.jobs.refresh(key)
assert neuron.jobs.reserve(key)
print("reserved", flush=True)
"""


def _insert_error_job(table, animal_id: int, message: str) -> None:
    """An error row in the table's job queue, as a worker on this host would have left it (columns quoted
    for the backend: `user` is a reserved word on PostgreSQL)."""
    import platform
    qi = table.connection.adapter.quote_identifier
    columns = ("animal_id", "session", "scan_idx", "status", "priority", "error_message", "host", "pid",
               "connection_id", "user", "version")
    table.connection.query(
        f"INSERT INTO {table.jobs.full_table_name} ({', '.join(map(qi, columns))}) "
        f"VALUES ({int(animal_id)}, 1, 1, 'error', 5, %s, %s, 1, 1, 'test', '')", args=(message, platform.node()))


def _kill(connection, connection_id: int) -> None:
    """End another session of the server (MySQL/MariaDB: KILL; PostgreSQL: pg_terminate_backend)."""
    if connection.adapter.backend == "postgresql":
        connection.query(f"SELECT pg_terminate_backend({int(connection_id)})")
    else:
        connection.query(f"KILL {int(connection_id)}")


def _scan(exp, animal_id):
    images, scan = make_recording(animal_id=animal_id, image_set=f"toy_jobs{animal_id}")
    exp.ingest(images, [scan])
    return {"animal_id": animal_id, "session": 1, "scan_idx": 1}


def test_job_of_a_dead_worker_is_reclaimed_and_finished(modules, prefix):
    exp = modules["experiment"]
    key = _scan(exp, 501)
    out = run_python(["-c", RESERVE_AND_DIE, prefix, "501"], timeout=120)
    assert "reserved" in out.stdout, out.stderr
    assert len(exp.Neuron.jobs.reserved & key) == 1            # its worker is gone, the job is not
    exp.Neuron.populate(key, reserve_jobs=True)
    assert not (exp.Neuron & key)                              # a reserved job is not taken by others
    tables = worker.computed_tables(modules)
    assert jobs.reclaim(tables) == {"experiment.Neuron": 1}
    exp.Neuron.populate(key, reserve_jobs=True)
    assert len(exp.Neuron & key) == 1


def test_live_reservation_is_kept_until_its_timeout(modules):
    exp = modules["experiment"]
    key = _scan(exp, 502)
    exp.Neuron.jobs.refresh(key)
    assert exp.Neuron.jobs.reserve(key)                        # held by this process's live connection
    tables = worker.computed_tables(modules)
    assert jobs.reclaim(tables) == {}
    time.sleep(2.0)
    assert jobs.reclaim(tables, timeouts={"Neuron": 1}) == {"experiment.Neuron": 1}
    exp.Neuron.populate(key, reserve_jobs=True)
    assert len(exp.Neuron & key) == 1


def test_errors_are_listed_and_retried(modules, prefix, monkeypatch, capsys):
    exp = modules["experiment"]
    key = _scan(exp, 503)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(reliability, "snr_weights", broken)
    exp.Neuron.populate(key, reserve_jobs=True, suppress_errors=True)
    assert not (exp.Neuron & key)
    capsys.readouterr()
    assert cli.main(["--prefix", prefix, "jobs", "errors", "--table", "Neuron", "--trace"]) == 0
    out = capsys.readouterr().out
    assert "disk on fire" in out and "Traceback" in out and "503" in out
    assert cli.main(["--prefix", prefix, "jobs"]) == 0
    assert "experiment.Neuron" in capsys.readouterr().out
    monkeypatch.undo()
    exp.Neuron.populate(key, reserve_jobs=True)
    assert not (exp.Neuron & key)                              # an error is not retried by itself
    assert cli.main(["--prefix", prefix, "jobs", "retry", "--table", "Neuron", "--key", "animal_id=503"]) == 0
    assert "cleared 1" in capsys.readouterr().out
    exp.Neuron.populate(key, reserve_jobs=True)
    assert len(exp.Neuron & key) == 1


def test_ignored_key_is_skipped(modules, prefix):
    exp = modules["experiment"]
    key = _scan(exp, 504)
    assert cli.main(["--prefix", prefix, "jobs", "ignore", "--table", "Neuron", "--key",
                     "animal_id=504", "session=1", "scan_idx=1"]) == 0
    exp.Neuron.populate(key, reserve_jobs=True)
    assert not (exp.Neuron & key)
    assert cli.main(["--prefix", prefix, "jobs", "ignore", "--table", "Nope", "--key", "animal_id=1"]) == 1
    (exp.Neuron.jobs & key).delete()                           # leave the queue clean for other modules


def test_errors_of_a_lost_connection_are_queued_again(modules):
    """After a reconnect the worker clears its host's errors that only record a lost connection
    (nothing of those jobs was written); other errors stay for a person to read."""
    table = modules["experiment"].Neuron
    table.jobs.progress()                                   # the job table exists
    for animal, message in ((505, "LostConnectionError: Connection was lost during a transaction."),
                            (506, "ValueError: bad input")):
        _insert_error_job(table, animal, message)
    try:
        assert worker.retry_lost_connection_errors([table]) == {"experiment.Neuron": 1}
        left = table.jobs & "animal_id in (505, 506)"
        assert list(left.to_arrays("animal_id")) == [506]
    finally:
        (table.jobs & "animal_id in (505, 506)").delete_quick()


def test_prioritized_jobs_run_first_and_alone(modules, prefix, capsys):
    """`jobs prioritize` moves chosen pending keys ahead; `worker --priority P` takes only those."""
    exp = modules["experiment"]
    keys = [_scan(exp, animal) for animal in (507, 508)]
    urgent = keys[1]
    assert cli.main(["--prefix", prefix, "jobs", "prioritize", "--table", "Neuron", "--priority", "1",
                     "--key", f"animal_id={urgent['animal_id']}"]) == 0
    assert "1 pending job(s) now at priority 1" in capsys.readouterr().out
    assert (exp.Neuron.jobs & urgent).fetch1("priority") == 1
    assert (exp.Neuron.jobs & keys[0]).fetch1("priority") > 1
    made = worker.run_once([exp.Neuron], display_progress=False, priority=1)
    assert made["Neuron"] == (1, 0)
    assert len(exp.Neuron & urgent) == 1 and not (exp.Neuron & keys[0])
    worker.run_once([exp.Neuron], display_progress=False)
    assert len(exp.Neuron & keys) == 2


def test_a_live_worker_keeps_its_job_when_its_connection_is_closed(modules):
    """A server closes idle connections (wait_timeout) of workers that train for hours: the heartbeat,
    not the connection, says the worker lives. A job whose heartbeat stops is reclaimed after the lease."""
    from populate import watchdog
    exp = modules["experiment"]
    key = _scan(exp, 509)
    exp.Neuron.jobs.refresh(key)
    side = watchdog.side_connection()            # plays the worker's main connection, which the server closes
    reserving = exp.Neuron.jobs & key
    reserving.connection.query(f"UPDATE {exp.Neuron.jobs.full_table_name} SET status='reserved', host=%s, pid=%s, "
                               "connection_id=%s, reserved_time=CURRENT_TIMESTAMP(3) WHERE animal_id=509",
                               args=(__import__("platform").node(), __import__("os").getpid(), side.connection_id))
    dog = watchdog.Watchdog([exp.Neuron], exp.Neuron.connection, interval=3600)
    try:
        dog.beat()
        _kill(exp.Neuron.connection, side.connection_id)
        time.sleep(0.5)
        tables = worker.computed_tables(modules)
        assert jobs.reclaim(tables) == {}                                   # closed connection, fresh heartbeat
        row = (exp.Neuron.jobs & key).fetch1()
        assert row["status"] == "reserved" and row["completed_time"] is not None
        assert int(row["connection_id"]) == int(exp.Neuron.connection.connection_id)   # follows the live one
        time.sleep(1.5)
        assert jobs.reclaim(tables, lease=1) == {"experiment.Neuron": 1}     # heartbeat older than the lease
    finally:
        dog._conn = None
        (exp.Neuron.jobs & key).delete_quick()


def test_the_watchdog_records_a_hung_job(modules):
    from populate import watchdog
    exp = modules["experiment"]
    key = _scan(exp, 510)
    exp.Neuron.jobs.refresh(key)
    assert exp.Neuron.jobs.reserve(key)
    hung = []
    dog = watchdog.Watchdog([exp.Neuron], exp.Neuron.connection, interval=3600, job_timeout=5,
                            on_hung=hung.append)
    try:
        dog.beat()
        assert not hung                                                     # still within its limit
        time.sleep(5.5)
        dog.beat()
        assert hung and "past the table's limit" in hung[0]
        row = (exp.Neuron.jobs & key).fetch1()
        assert row["status"] == "error" and row["error_message"].startswith("Hung:")
    finally:
        (exp.Neuron.jobs & key).delete_quick()


HANGING_WORKER = """
import signal, sys, time
from neuralreg_schema import pipeline
from populate import worker
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron

def stuck(self, key):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})   # as in native code
    print("stuck", flush=True)
    time.sleep(600)

neuron.make = stuck
sys.exit(worker.main(["--prefix", sys.argv[1], "--tables", "Neuron", "--heartbeat", "0.5",
                      "--job-timeout", "3"]))
"""


def test_a_worker_stuck_in_a_job_ends_itself_and_records_the_error(modules, prefix):
    from populate import watchdog
    exp = modules["experiment"]
    key = _scan(exp, 511)
    try:
        started = time.monotonic()
        out = run_python(["-c", HANGING_WORKER, prefix], timeout=120)
        assert out.returncode == watchdog.HUNG_EXIT, out.stderr[-3000:]
        assert time.monotonic() - started < 60
        assert "stuck" in out.stdout and "Hung:" in out.stderr and "stuck" in out.stderr   # with the stack
        hung = (exp.Neuron.jobs & "status = 'error'" & "error_message LIKE 'Hung:%'").to_dicts()
        assert len(hung) == 1 and "past the table's limit of 3 s" in hung[0]["error_message"], hung
        assert not (exp.Neuron & {k: hung[0][k] for k in ("animal_id", "session", "scan_idx")})
    finally:
        (exp.Neuron.jobs & "error_message LIKE 'Hung:%'").delete_quick()
        (exp.Neuron.jobs & key).delete_quick()


def test_retry_and_prioritize_refuse_unknown_key_names(modules, prefix, capsys):
    """A typo must not clear every error, and a crafted name must not reach SQL."""
    table = modules["experiment"].Neuron
    table.jobs.progress()
    _insert_error_job(table, 512, "ValueError: x")
    try:
        for name in ("animal=99999", "animal_id.x:char(10)) OR (1=1=3"):
            for action in (["retry"], ["prioritize", "--priority", "1"]):
                code = cli.main(["--prefix", prefix, "jobs", *action, "--table", "Neuron", "--key", name])
                assert code == 1, (name, action)
                assert "not attributes of the job key" in capsys.readouterr().err
            assert cli.main(["--prefix", prefix, "jobs", "retry", "--key", name]) == 1
            capsys.readouterr()
        assert len(table.jobs.errors & {"animal_id": 512}) == 1                 # nothing was cleared
        assert cli.main(["--prefix", prefix, "jobs", "retry", "--key", "animal_id=512"]) == 0
        assert "cleared 1" in capsys.readouterr().out
    finally:
        (table.jobs & {"animal_id": 512}).delete_quick()


def test_the_worker_computes_jobs_that_failed_on_a_lost_connection(modules, prefix):
    import platform
    exp = modules["experiment"]
    key = _scan(exp, 513)
    table = exp.Neuron
    table.jobs.refresh(key)
    table.connection.query(
        f"UPDATE {table.jobs.full_table_name} SET status='error', host=%s, "
        "error_message='LostConnectionError: Connection was lost during a transaction.' WHERE animal_id=513",
        args=(platform.node(),))
    assert worker.main(["--prefix", prefix, "--tables", "Neuron"]) == 0
    assert len(exp.Neuron & key) == 1 and not (table.jobs.errors & key)


OTHER_WORKER = """
import sys
from neuralreg_schema import pipeline
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron
key = {"animal_id": int(sys.argv[2]), "session": 1, "scan_idx": 1}
(neuron.jobs & key).delete_quick()            # it reclaimed our job ...
neuron.populate(key)                          # ... computed it and inserted first
"""


def test_a_job_computed_elsewhere_first_is_discarded_not_a_crash(modules, prefix, monkeypatch, caplog):
    """Our job was reclaimed and another worker inserted the key while we computed: our insert fails,
    DataJoint cannot record the error on the vanished job row, and the worker logs and goes on."""
    exp = modules["experiment"]
    key = _scan(exp, 514)
    real = exp.Neuron.make

    def raced(self, k):
        if k["animal_id"] != 514:
            return real(self, k)
        out = run_python(["-c", OTHER_WORKER, prefix, "514"], timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return real(self, k)
    monkeypatch.setattr(exp.Neuron, "make", raced)
    try:
        worker.run_once([exp.Neuron], display_progress=False)          # no exception: the worker goes on
        assert "computed by another worker first" in caplog.text
        assert len(exp.Neuron & key) == 1 and not (exp.Neuron.jobs & key & "status = 'reserved'")
    finally:
        monkeypatch.undo()
        (exp.Neuron.jobs & key).delete_quick()


def test_key_values_are_parsed_by_type_and_an_injection_is_refused(modules, prefix, capsys):
    """`--key "animal_id=1 OR 1=1"` used to reach SQL as the string '1 OR 1=1', which MySQL reads as 1:
    it cleared (or prioritized) the jobs of animal 1. Every value is parsed by its attribute's type; what
    does not parse is refused naming the attribute, with no SQL in the message, and nothing changes."""
    table = modules["experiment"].Neuron
    table.jobs.progress()
    for animal in (513, 514):
        _insert_error_job(table, animal, "ValueError: x")
    try:
        for text in ("animal_id=513 OR 1=1", "animal_id=513.0", "animal_id=5.13e2", "animal_id=0x201",
                     "session=1 OR 1=1", "animal_id=99999999999", "scan_idx=1--"):
            name = text.split("=")[0]
            rest = [f"{k}={v}" for k, v in (("animal_id", 513), ("session", 1), ("scan_idx", 1)) if k != name]
            for action in (["retry"], ["retry", "--table", "Neuron"], ["prioritize", "--table", "Neuron",
                                                                        "--priority", "1"],
                           ["ignore", "--table", "Neuron", "--key", *rest]):
                args = ["--prefix", prefix, "jobs", *action]
                args = args + [text] if "--key" in action else args + ["--key", text]
                assert cli.main(args) == 1, (text, action)
                err = capsys.readouterr().err
                assert text.split("=")[0] in err and "not " in err, err
                assert not any(w in err.upper() for w in ("SELECT", "WHERE", "UPDATE ", "DELETE ")), err
        assert len(table.jobs.errors & {"animal_id": 513}) == 1 and len(table.jobs.errors & {"animal_id": 514}) == 1
        assert cli.main(["--prefix", prefix, "jobs", "retry", "--key", "animal_id=+513"]) == 0
        assert "cleared 1" in capsys.readouterr().out
        assert len(table.jobs.errors & {"animal_id": 514}) == 1
    finally:
        (table.jobs & [{"animal_id": 513}, {"animal_id": 514}]).delete_quick()


SLOW_WORKER = """
import sys, time
from neuralreg_schema import pipeline
from populate import worker
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron

def slow(self, key):
    print("working", flush=True)
    time.sleep(float(sys.argv[2]))

neuron.make = slow
sys.exit(worker.main(["--prefix", sys.argv[1], "--tables", "Neuron", "--max-jobs", "1"]))
"""


def test_a_worker_job_has_its_lease_from_the_moment_it_is_reserved(modules, prefix, monkeypatch):
    """A worker's connection killed before its first heartbeat (every 30 s): the job was reclaimed as
    'no heartbeat and its connection is gone' although the worker lived, and two workers trained the
    same key. The worker now stamps the lease in the UPDATE that reserves the job, and a reclaim (the
    CLI on this host, or another host's worker) leaves it alone until the lease runs out."""
    import platform
    from tests.helpers import spawn, stop
    exp = modules["experiment"]
    key = _scan(exp, 515)
    proc = spawn(["-c", SLOW_WORKER, prefix, "900"])          # holds its job until stopped below
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "working" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, "the worker did not start its job"
            line = proc.stdout.readline()
        row = (exp.Neuron.jobs & key).fetch1()
        assert row["status"] == "reserved" and row["completed_time"] is not None     # the lease, before any beat
        _kill(exp.Neuron.connection, row["connection_id"])
        time.sleep(0.5)
        out = run_python(["-m", "neuralreg_schema.cli", "--prefix", prefix, "jobs", "reclaim"], timeout=600)
        assert out.returncode == 0 and "reclaimed: nothing" in out.stdout, (out.stdout, out.stderr[-2000:])
        monkeypatch.setattr(jobs.platform, "node", lambda: "another-host")           # a worker elsewhere
        tables = worker.computed_tables(modules)
        assert jobs.reclaim(tables) == {}
        assert (exp.Neuron.jobs & key).fetch1("status") == "reserved"
        stop(proc)                                                                   # the worker dies: no beats
        time.sleep(1.5)
        assert jobs.reclaim(tables, lease=1) == {"experiment.Neuron": 1}            # its lease runs out
        monkeypatch.setattr(jobs.platform, "node", platform.node)
    finally:
        stop(proc)
        (exp.Neuron.jobs & key).delete_quick()


def test_a_plain_populate_keeps_datajoints_reserve(modules):
    """Only the worker stamps a lease: a job reserved by a plain `populate(reserve_jobs=True)` (no
    watchdog beats for it) has none, and keeps the rules for jobs without a heartbeat."""
    from populate import watchdog
    exp = modules["experiment"]
    key = _scan(exp, 516)
    exp.Neuron.jobs.refresh(key)
    try:
        with watchdog.leases_on_reserve():                          # as inside the worker's loop
            assert exp.Neuron.jobs.reserve(key)
            assert not exp.Neuron.jobs.reserve(key)                 # still atomic: reserved once
        assert (exp.Neuron.jobs & key).fetch1("completed_time") is not None
        (exp.Neuron.jobs & key).delete_quick()
        exp.Neuron.jobs.refresh(key)
        assert exp.Neuron.jobs.reserve(key)                         # outside it: DataJoint's own reserve
        assert (exp.Neuron.jobs & key).fetch1("completed_time") is None
    finally:
        (exp.Neuron.jobs & key).delete_quick()
