"""A worker killed (SIGKILL) in the middle of an ingest leaves no partial scan; the re-run completes."""
import os
import signal
import textwrap
import time

from tests.helpers import ROOT, make_recording, spawn, stop

SCRIPT = textwrap.dedent("""
    import sys, time
    from neuralreg_schema import pipeline
    from tests.helpers import make_recording
    exp = pipeline.activate(sys.argv[1])["experiment"]
    images, scan = make_recording(animal_id=301, image_set="toy_crash")
    scan.ground_truth = {}
    def stall(*args):
        print("trials inserted", flush=True)
        time.sleep(120)
    exp._insert_truth = stall
    exp.ingest(images, [scan])
""")


def test_sigkill_mid_ingest_leaves_nothing_and_rerun_completes(modules, prefix):
    exp = modules["experiment"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = spawn(["-c", SCRIPT, prefix], env=env)
    try:
        deadline = time.time() + 120
        line = ""
        while time.time() < deadline and "trials inserted" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the ingest process ended before the crash point"
        assert "trials inserted" in line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    key = {"animal_id": 301}
    deadline = time.time() + 30           # the server rolls back once it notices the dead connection
    while time.time() < deadline and (exp.Scan & key or exp.Trial & key):
        time.sleep(0.5)
    assert not exp.Scan & key and not exp.Trial & key and not exp.Scan.Unit & key
    assert not exp.ImageSet & {"image_set": "toy_crash"}
    # the killed insert had written its responses file: `neuralreg store gc` finds it (dry run)
    from neuralreg_schema import store_gc
    orphans = [o["path"] for o in store_gc.collect(modules)["orphans"]]
    assert any("animal_id=301" in path for path in orphans), orphans
    images, scan = make_recording(animal_id=301, image_set="toy_crash")
    assert exp.ingest(images, [scan]) == [{"animal_id": 301, "session": 1, "scan_idx": 1}]
    assert len(exp.Trial & key) == scan.n_trials
