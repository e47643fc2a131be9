"""Preemption is a normal event (populate/preempt.py): a SIGTERM or SIGINT to a real worker process
gives its job back to the queue by itself, counted in the job row, and the worker exits with 75; past
--max-preemptions the job becomes an error that says so. Covered: a signal inside `make`, a second
signal while the first is handled, a signal between reserve and make, a signal that arrives while the
main thread is stuck in native code (the guard thread gives the job back), the count in `neuralreg
jobs` and the SLURM ids in `neuralreg jobs held`. A hand-made recording's Neuron job stands for any
job here (seconds); test_preemption_resume.py TERMs a classifier and an attack mid-run."""
import json
import signal
import time

from populate import preempt
from tests.helpers import cli, make_recording, run_python, spawn, stop

WORKER = """
import os, signal, sys, time
from neuralreg_schema import pipeline
from populate import watchdog, worker
neuron = pipeline.activate(sys.argv[1])["experiment"].Neuron
mode = sys.argv[2]

def slow(self, key):
    if mode == "native":                    # a kernel that does not come back: the main thread never sees it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print("in make", flush=True)
    time.sleep(60)

neuron.make = slow
if mode == "window":                        # stop between reserve and make
    reserve = watchdog.reserve_with_lease
    def reserve_then_wait(jobs, key):
        got = reserve(jobs, key)
        if got:
            print("reserved", flush=True)
            time.sleep(60)
        return got
    watchdog.reserve_with_lease = reserve_then_wait
sys.exit(worker.main(["--prefix", sys.argv[1], "--tables", "Neuron", "--preempt-grace", "1", *sys.argv[3:]]))
"""

SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}


def _scan(exp, animal_id):
    # the session's other tests may leave Neuron keys to do (some broken on purpose): settle them first
    # (computed, or an error job no worker takes), so the worker started here finds only this key
    exp.Neuron.populate(reserve_jobs=True, suppress_errors=True)
    images, scan = make_recording(animal_id=animal_id, image_set=f"toy_preempt{animal_id}")
    exp.ingest(images, [scan])
    return {"animal_id": animal_id, "session": 1, "scan_idx": 1}


def _start(prefix, mode, *extra, env=None):
    import os
    proc = spawn(["-c", WORKER, prefix, mode, *extra], env={**os.environ, **(env or {})})
    deadline, line = time.time() + 120, ""
    want = "reserved" if mode == "window" else "in make"
    while time.time() < deadline and want not in line:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "the worker ended before the job started"
    assert want in line
    return proc


def _leave_no_work(exp, key):
    """The scan's Neuron computed and its job row gone: the next test's worker finds only its own key."""
    (exp.Neuron.jobs & key).delete_quick()
    exp.Neuron.populate(key)


def _job(exp, key):
    return (exp.Neuron.jobs & key).fetch1()


def test_sigterm_in_make_gives_the_job_back_counted_and_the_bound_makes_it_an_error(modules, prefix):
    exp = modules["experiment"]
    key = _scan(exp, 601)
    try:
        worker = _start(prefix, "make", env=SLURM_ENV)
        try:
            held = cli(prefix, "jobs", "held", "--json")               # who holds it: the SLURM ids
            assert held.returncode == 0, held.stderr
            rows = [r for r in json.loads(held.stdout)["held"] if r["key"]["animal_id"] == 601]
            assert len(rows) == 1 and "[slurm job 4242 (array 4240_2)]" in rows[0]["user"], rows
            worker.send_signal(signal.SIGTERM)
            worker.send_signal(signal.SIGTERM)                         # a second TERM is ignored
            log = worker.communicate(timeout=60)[0]
        finally:
            stop(worker)
        assert worker.returncode == preempt.PREEMPTED_EXIT, log[-3000:]
        assert "SIGTERM again" in log or "SIGTERM received" in log, log[-3000:]
        job = _job(exp, key)
        assert job["status"] == "pending", job
        assert job["error_message"].startswith("Preempted 1 time(s) (limit 10); last: SIGTERM"), job
        assert "slurm job 4242 (array 4240_2)" in job["error_message"]
        assert not exp.Neuron & key                                    # nothing partial
        out = cli(prefix, "jobs", "--json")
        row = next(r for r in json.loads(out.stdout)["tables"] if r["table"] == "experiment.Neuron")
        assert row["preempted"] >= 1 and row["pending"] >= 1, row
        # SIGINT (Ctrl-C) counts the same; past --max-preemptions 1 the job is an error that says so
        worker = _start(prefix, "make", "--max-preemptions", "1")
        worker.send_signal(signal.SIGINT)
        log = worker.communicate(timeout=60)[0]
        assert worker.returncode == preempt.PREEMPTED_EXIT, log[-3000:]
        job = _job(exp, key)
        assert job["status"] == "error", job
        assert job["error_message"].startswith("Preempted 2 times, more than the limit of 1"), job
        assert "SIGINT" in job["error_message"] and "jobs retry" in job["error_message"]
        assert cli(prefix, "jobs", "retry", "--table", "Neuron", "--key", "animal_id=601").returncode == 0
        exp.Neuron.populate(key, reserve_jobs=True)                    # it completes; its job row is gone
        assert len(exp.Neuron & key) == 1 and not exp.Neuron.jobs & key
    finally:
        _leave_no_work(exp, key)


def test_sigterm_between_reserve_and_make_gives_the_job_back(modules, prefix):
    exp = modules["experiment"]
    key = _scan(exp, 602)
    try:
        worker = _start(prefix, "window")
        worker.send_signal(signal.SIGTERM)
        log = worker.communicate(timeout=60)[0]
        assert worker.returncode == preempt.PREEMPTED_EXIT, log[-3000:]
        job = _job(exp, key)
        assert job["status"] == "pending" and job["error_message"].startswith("Preempted 1 time(s)"), job
    finally:
        _leave_no_work(exp, key)


def test_a_worker_stuck_in_native_code_gives_its_job_back_from_the_guard_thread(modules, prefix):
    exp = modules["experiment"]
    key = _scan(exp, 603)
    try:
        worker = _start(prefix, "native")
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        log = worker.communicate(timeout=60)[0]
        assert worker.returncode == preempt.PREEMPTED_EXIT, log[-3000:]
        assert time.monotonic() - started < 30 and "did not come back from native code" in log, log[-3000:]
        job = _job(exp, key)
        assert job["status"] == "pending" and job["error_message"].startswith("Preempted 1 time(s)"), (job, log[-3000:])
    finally:
        _leave_no_work(exp, key)


def test_an_idle_worker_told_to_stop_exits_75_and_holds_nothing(modules, prefix):
    out = run_python(["-c", "import os, signal, sys\n"
                            "from populate import worker\n"
                            "import populate.worker as w\n"
                            "sleep = w.time.sleep\n"
                            "def stop_me(s):\n"
                            "    os.kill(os.getpid(), signal.SIGTERM); sleep(s)\n"
                            "w.time.sleep = stop_me\n"
                            "sys.exit(worker.main(['--prefix', sys.argv[1], '--tables', 'Neuron', '--forever', "
                            "'--poll', '0.2']))", prefix], timeout=120)
    assert out.returncode == preempt.PREEMPTED_EXIT, out.stderr[-3000:]
    assert "given back {}" in out.stderr, out.stderr[-3000:]
