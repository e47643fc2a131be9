"""Job administration: jobs of dead workers are reclaimed, live ones are not (until their timeout);
errors are listed with their tracebacks and retried; ignored keys are skipped."""
import subprocess
import sys
import time
from pathlib import Path

from neuralreg_schema import cli
from neuralreg_schema.compute import rsa
from populate import jobs, worker
from tests.conftest import make_recording

ROOT = Path(__file__).resolve().parents[2]

RESERVE_AND_DIE = """
import sys
from neuralreg_schema import pipeline
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron
key = {"animal_id": int(sys.argv[2]), "session": 1, "scan_idx": 1}
neuron.jobs.refresh(key)
assert neuron.jobs.reserve(key)
print("reserved", flush=True)
"""


def _scan(exp, animal_id):
    images, scan = make_recording(animal_id=animal_id, image_set=f"toy_jobs{animal_id}")
    exp.ingest(images, [scan])
    return {"animal_id": animal_id, "session": 1, "scan_idx": 1}


def test_job_of_a_dead_worker_is_reclaimed_and_finished(modules, prefix):
    exp = modules["experiment"]
    key = _scan(exp, 501)
    out = subprocess.run([sys.executable, "-c", RESERVE_AND_DIE, prefix, "501"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
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

    monkeypatch.setattr(rsa, "snr_weights", broken)
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
    assert cli.main(["--prefix", prefix, "jobs", "ignore", "--table", "Nope", "--key", "animal_id=1"]) == 2
    (exp.Neuron.jobs & key).delete()                           # leave the queue clean for other modules


def test_errors_of_a_lost_connection_are_queued_again(modules):
    """After a reconnect the worker clears its host's errors that only record a lost connection
    (nothing of those jobs was written); other errors stay for a person to read."""
    import platform
    table = modules["experiment"].Neuron
    table.jobs.progress()                                   # the job table exists
    for animal, message in ((505, "LostConnectionError: Connection was lost during a transaction."),
                            (506, "ValueError: bad input")):
        table.connection.query(
            f"INSERT INTO `{table.database}`.`~~neuron` (animal_id, session, scan_idx, status, priority, "
            "error_message, host, pid, connection_id, user, version) "
            f"VALUES ({animal}, 1, 1, 'error', 5, %s, %s, 1, 1, 'test', '')", args=(message, platform.node()))
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
