"""A hang fails, it does not block: the suite's pytest-timeout settings interrupt a test stuck where
signals cannot reach it (as a thread spinning in a native kernel is)."""
import time

from tests.helpers import ROOT, run_python

STUCK = '''
import signal, time

def test_stuck_in_native_code():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})   # no signal handler can run, as in a native hang
    time.sleep(120)
'''


def test_a_stuck_test_is_ended_by_the_configured_timeout(tmp_path):
    (tmp_path / "test_stuck.py").write_text(STUCK)
    started = time.monotonic()
    # the project's pytest configuration (timeout method, ...), with the per-test limit shortened to 3 s
    proc = run_python(["-m", "pytest", "-q", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
                       "--timeout", "3", "-p", "no:cacheprovider", str(tmp_path / "test_stuck.py")],
                      timeout=100, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert elapsed < 60, f"the stuck test held the run for {elapsed:.0f} s"
    out = proc.stdout + proc.stderr
    assert "Timeout" in out and "test_stuck_in_native_code" in out      # with the stack dump
