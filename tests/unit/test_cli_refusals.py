"""Options that used to be accepted silently and mean something else (issue 25, item 9): a heartbeat
of 0 s (thousands of UPDATEs a second), a stall or job timeout of 0 (silently the default), a negative
seed count, a scan key with an extra part. Refused as usage errors (exit 2) or runtime errors (exit 1)
before any database is touched."""
import pytest

from neuralreg_schema import cli, messages
from tests.helpers import run_python


def neuralreg(*args):
    return run_python(["-m", "neuralreg_schema.cli", *args], timeout=120)


WORKER_REFUSALS = [["--heartbeat", "0"], ["--heartbeat", "-1"], ["--heartbeat", "0.01"], ["--heartbeat", "1000"],
                   ["--heartbeat", "nan"], ["--stall-timeout", "0"], ["--stall-timeout", "-5"], ["--job-timeout", "0"],
                   ["--poll", "0"], ["--max-jobs", "0"], ["--idle-exit", "-1"], ["--reconnect-timeout", "-1"],
                   ["--workers-per-machine", "0"], ["--stall-timeout", "inf"]]


@pytest.mark.parametrize("option", WORKER_REFUSALS, ids=[" ".join(o) for o in WORKER_REFUSALS])
def test_worker_options_out_of_range_are_usage_errors(option):
    for command in (["-m", "neuralreg_schema.cli", "populate"], ["-m", "populate.worker"]):
        out = run_python([*command, *option], timeout=120)
        assert out.returncode == 2, (command, option, out.stdout[-500:], out.stderr[-500:])
        assert option[0] in out.stderr and "Traceback" not in out.stderr


def test_worker_options_in_range_parse():
    parser = cli.build_parser()
    args = parser.parse_args(["populate", "--heartbeat", "0.5", "--stall-timeout", "7200", "--job-timeout", "3",
                              "--poll", "1", "--idle-exit", "0", "--max-jobs", "1"])
    assert (args.heartbeat, args.stall_timeout, args.job_timeout, args.idle_exit) == (0.5, 7200.0, 3.0, 0.0)


@pytest.mark.parametrize("seeds", ["-1", "0", "two"])
def test_plan_refuses_a_seed_count_below_one(seeds):
    out = neuralreg("plan", "paper", "--seeds", seeds)
    assert out.returncode == 2 and "--seeds" in out.stderr, out.stderr[-500:]


@pytest.mark.parametrize("text", ["91000001-1-1-99", "1-1", "1--1-1", "a-1-1", "1-1-99999", "3000000000-1-1",
                                  "1-1-1 ", "１-1-1", ""])
def test_a_scan_key_must_be_exactly_three_whole_numbers_in_range(text):
    with pytest.raises(ValueError, match="--scans"):
        cli._scan_key(text)


def test_a_scan_key_parses():
    assert cli._scan_key("26872-17-20") == {"animal_id": 26872, "session": 17, "scan_idx": 20}


def test_database_errors_are_reported_without_their_sql():
    """PostgreSQL quoted the statement ('LINE 1: SELECT ...'); DataJoint's query errors carry it as an
    argument: the one-line message keeps the server's words and drops the SQL."""
    from datajoint.errors import QuerySyntaxError
    pg = Exception('invalid input syntax for type integer: "1 OR 1=1"\nLINE 1: ...WHERE ("animal_id"=\'1 OR 1=1\')\n ^')
    assert messages.one_line(pg) == 'invalid input syntax for type integer: "1 OR 1=1"'
    dj = QuerySyntaxError("syntax error at or near \")\"", "SELECT count(DISTINCT ) FROM \"x\".\"y\"")
    assert "SELECT" not in messages.one_line(dj) and "syntax error" in messages.one_line(dj)
    assert messages.one_line(ValueError("plain problem")) == "plain problem"
    assert messages.one_line(KeyError()) == "KeyError"


def test_file_errors_name_their_file():
    """An OSError's args are (errno, text): the one line is the text and the file, not '2 No such file'."""
    assert messages.one_line(FileNotFoundError(2, "No such file or directory", "/x/y.sbatch")) == \
        "No such file or directory: /x/y.sbatch"
    assert messages.one_line(PermissionError(13, "Permission denied", "/a", None)) == "Permission denied: /a"
    assert messages.one_line(OSError(18, "Invalid cross-device link", "/a", None, "/b")) == \
        "Invalid cross-device link: /a -> /b"
    assert messages.one_line(FileNotFoundError("a message of our own")) == "a message of our own"
    assert messages.one_line("a\nmessage") == "a message"
