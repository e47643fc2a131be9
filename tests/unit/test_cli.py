"""The `neuralreg` command's conventions without a database: exit status 2 for usage errors and 1 for
runtime errors (one line on stderr), --version, --prefix and --threads before or after the
subcommand, `neuralreg populate` taking exactly the worker's options, --json only where documented."""
import argparse
import os
import socket

import pytest

from neuralreg_schema import cli
from populate import jobs, worker
from tests.helpers import run_python


def neuralreg(*args, env=None, timeout=120):
    return run_python(["-m", "neuralreg_schema.cli", *args], env=env, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version_prints_the_package_version_and_exits_0():
    from importlib import metadata
    out = neuralreg("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"neuralreg {metadata.version('neuralreg')}"), out.stdout


@pytest.mark.parametrize("args", [["status", "--bogus"], ["nope"], [], ["jobs", "reclaim", "--json"],
                                  ["db", "up", "--json"], ["populate", "--max-jobs", "many"]])
def test_usage_errors_exit_2(args):
    out = neuralreg(*args)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert "usage:" in out.stderr and "Traceback" not in out.stderr


def test_a_runtime_error_exits_1_with_one_line():
    env = {**os.environ, "DJ_HOST": "127.0.0.1", "DJ_PORT": str(_free_port())}     # nothing listens there
    for args in (["status"], ["status", "--json"], ["jobs"], ["report", "--out", "x"], ["drop", "--yes"]):
        out = neuralreg(*args, env=env)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        errors = [line for line in out.stderr.splitlines() if line.startswith("neuralreg: error:")]
        assert len(errors) == 1 and "no database answers" in errors[0] and "neuralreg db up" in errors[0], out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""


def test_an_unexpected_exception_is_one_line_and_exit_1(monkeypatch, capsys):
    from neuralreg_schema import compose

    def broken(*args, **kwargs):
        raise RuntimeError("disk full\nwhile writing")

    monkeypatch.setattr(compose, "write_gpu_override", broken)
    assert cli.main(["compose-gpus", "2"]) == 1
    err = capsys.readouterr().err
    assert err == "neuralreg: error: RuntimeError: disk full while writing\n"
    monkeypatch.setenv("NEURALREG_DEBUG", "1")                       # the traceback, on request
    with pytest.raises(RuntimeError, match="disk full"):
        cli.main(["compose-gpus", "2"])


def test_prefix_and_threads_go_before_or_after_the_subcommand(monkeypatch):
    monkeypatch.delenv("NEURALREG_PREFIX", raising=False)
    parser = cli.build_parser()
    for argv in (["--prefix", "neuralreg_a", "--threads", "3", "status"], ["status", "--prefix", "neuralreg_a", "--threads", "3"],
                 ["--prefix", "neuralreg_a", "ingest", "simulated", "--threads", "3"],
                 ["ingest", "simulated", "--prefix", "neuralreg_a", "--threads", "3"],
                 ["jobs", "errors", "--prefix", "neuralreg_a", "--threads", "3"],
                 ["--threads", "3", "populate", "--prefix", "neuralreg_a", "--max-jobs", "2"]):
        args = parser.parse_args(argv)
        assert cli._prefix(args) == "neuralreg_a" and args.threads == 3, argv
    assert cli._prefix(parser.parse_args(["--prefix", "neuralreg_a", "status", "--prefix", "neuralreg_b"])) == "neuralreg_b"
    assert cli._prefix(parser.parse_args(["status"])) == "neuralreg"
    monkeypatch.setenv("NEURALREG_PREFIX", "neuralreg_env")
    assert cli._prefix(parser.parse_args(["status"])) == "neuralreg_env"
    assert not hasattr(parser.parse_args(["status"]), "threads")


def _options(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: (tuple(a.option_strings), a.default, a.type, a.help) for a in parser._actions
            if a.option_strings and a.dest != "help"}


def test_populate_takes_the_workers_options():
    standalone = _options(worker.add_options(argparse.ArgumentParser()))
    sub = cli.build_parser()._subparsers._group_actions[0].choices["populate"]
    via_cli = _options(sub)
    assert set(via_cli) == set(standalone)
    for dest in set(standalone) - {"prefix", "threads"}:             # those two are the command's own
        assert via_cli[dest] == standalone[dest], dest
    args = cli.build_parser().parse_args(["populate", "--tables", "Neuron", "PredictiveModel", "--max-jobs", "4",
                                          "--forever", "--idle-exit", "5", "--priority", "1"])
    assert args.func is cli.cmd_populate and args.tables == ["Neuron", "PredictiveModel"]
    assert (args.max_jobs, args.forever, args.idle_exit, args.priority) == (4, True, 5.0, 1)


def test_populate_hands_the_parsed_options_to_the_worker(monkeypatch):
    seen = {}
    monkeypatch.setattr(worker, "run", lambda args: seen.update(vars(args)) or 1)
    from neuralreg_schema import db
    monkeypatch.setattr(db, "answers", lambda target, timeout=1.0: True)
    monkeypatch.setattr(cli, "_nothing_to_populate", lambda prefix: False)
    assert cli.main(["populate", "--prefix", "neuralreg_w", "--max-jobs", "2"]) == 1    # the worker's status
    assert seen["prefix"] == "neuralreg_w" and seen["max_jobs"] == 2 and seen["threads"] is None


def test_populate_refuses_a_prefix_without_schemas_and_creates_nothing(monkeypatch, capsys):
    from neuralreg_schema import db, pipeline
    ran, activated = [], []
    monkeypatch.setattr(worker, "run", lambda args: ran.append(args) or 0)
    monkeypatch.setattr(db, "answers", lambda target, timeout=1.0: True)
    monkeypatch.setattr(pipeline, "activate", lambda prefix, **kw: activated.append(prefix))
    monkeypatch.setattr(cli.settings, "connection_summary", lambda: "u@h:1")
    for existing in ({}, {"neuralreg_p": ["experiment"]}):              # none, or not all of its schemas
        monkeypatch.setattr(pipeline, "existing_prefixes", lambda connection=None, e=existing: e)
        assert cli.main(["populate", "--prefix", "neuralreg_p"]) == 1
        err = capsys.readouterr().err
        assert "nothing to populate" in err and "nothing ingested or planned" in err, err
        assert "neuralreg --prefix neuralreg_p ingest simulated" in err and "plan demo" in err, err
        assert not ran and not activated
    assert cli.main(["populate", "--prefix", "neuralreg_p", "--forever"]) == 0 and len(ran) == 1   # waits for work


@pytest.mark.parametrize("prefix", ["mylab_study1", "neuralregx", "neuralreg_", "neuralreg_Lab", "neural-reg",
                                    "neuralreg_" + "x" * 40])
def test_a_prefix_that_breaks_the_rule_is_refused_before_any_connection(monkeypatch, capsys, prefix):
    from neuralreg_schema import db

    def no_connection(*args, **kwargs):
        raise AssertionError("connected")

    monkeypatch.setattr(db, "answers", no_connection)
    monkeypatch.setattr(db, "configured_target", no_connection)
    for argv in (["--prefix", prefix, "status"], ["plan", "demo", "--prefix", prefix], ["populate", "--prefix", prefix],
                 ["demo", "--prefix", prefix], ["report", "--prefix", prefix]):
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith(f"neuralreg: error: schema prefix {prefix!r} breaks the rule: a prefix is 'neuralreg' "
                              "or 'neuralreg_<name>'"), err
    monkeypatch.setenv("NEURALREG_PREFIX", prefix)
    assert cli.main(["jobs"]) == 1 and "breaks the rule" in capsys.readouterr().err


def test_the_prefix_rule_suggests_a_prefix_that_keeps_it():
    from neuralreg_schema import pipeline
    for good in ("neuralreg", "neuralreg_demo", "neuralreg_mylab_study1", "neuralreg_t0123456789"):
        assert pipeline.check_prefix(good) == good
    with pytest.raises(ValueError, match=r"\(e\.g\. neuralreg_mylab_study1\)"):
        pipeline.check_prefix("mylab_study1")


def test_status_and_jobs_explain_their_columns_in_their_help(capsys):
    for command in ("status", "jobs"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for meaning in ("done: rows computed", "remaining: keys whose inputs exist",
                        "pending = queued, waiting for a worker", "reserved = a worker is computing it",
                        "error = failed", "ignore = skipped", "not queued yet"):
            assert meaning in text, (command, meaning)


def test_work_that_no_job_will_do_is_named_with_the_command_that_queues_it():
    rows = [{"table": "experiment.Neuron", "done": 1, "remaining": 3, "pending": 1, "reserved": 0, "error": 1,
             "ignore": 0},
            {"table": "predictive.PredictiveModel", "done": 0, "remaining": 2, "pending": 2, "reserved": 0,
             "error": 0, "ignore": 0},
            {"table": "classifier.ClassifierPlan", "rows": 10},
            {"table": "classifier.RegularizedClassifier", "done": 4, "remaining": 0, "pending": 0, "reserved": 0,
             "error": 0, "ignore": 0},
            {"table": "evaluation.AttackResult", "done": None, "remaining": None}]      # not in the database
    lines = jobs.unqueued("neuralreg_x", rows)
    assert len(lines) == 2, lines
    assert "6 planned classifier(s) wait for their similarity targets" in lines[0]
    assert lines[1].strip().startswith("experiment.Neuron: 1 key(s) can be computed but are not queued: "
                                       "`neuralreg --prefix neuralreg_x populate`")


def test_json_is_documented_for_each_command_that_takes_it():
    parser = cli.build_parser()
    assert parser.parse_args(["status", "--json"]).json is True
    assert parser.parse_args(["jobs", "--json"]).json is True
    assert parser.parse_args(["jobs", "errors", "--json"]).json is True
    assert parser.parse_args(["db", "status", "--json"]).json is True
    for name in ('status       {"prefix", "connection", "tables"', 'jobs         {"prefix", "tables"',
                 'jobs errors  {"prefix", "errors"', 'db status    {"backend", "host", "port"'):
        assert name in cli.__doc__, name


def test_drop_needs_the_prefix_typed_back(monkeypatch, capsys):
    from neuralreg_schema import db, pipeline
    dropped = []
    monkeypatch.setattr(db, "answers", lambda target, timeout=1.0: True)
    monkeypatch.setattr(pipeline, "existing_prefixes",
                        lambda connection=None: {"neuralreg_d": list(pipeline.MODULES), "neuralreg_demo": ["experiment"]})
    monkeypatch.setattr(pipeline, "drop_all", dropped.append)
    monkeypatch.setattr(cli.settings, "connection_summary", lambda: "u@h:1")
    for typed in ("", "neuralreg_demo", "neuralreg"):
        monkeypatch.setattr("builtins.input", lambda prompt, typed=typed: typed)
        assert cli.main(["drop", "--prefix", "neuralreg_d"]) == 1
        assert "not confirmed" in capsys.readouterr().err and not dropped

    def eof(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", eof)                      # no terminal, no --yes: nothing dropped
    assert cli.main(["drop", "--prefix", "neuralreg_d"]) == 1 and not dropped
    monkeypatch.setattr("builtins.input", lambda prompt: "neuralreg_d\n")
    assert cli.main(["drop", "--prefix", "neuralreg_d"]) == 0 and dropped == ["neuralreg_d"]
    monkeypatch.setattr("builtins.input", eof)
    assert cli.main(["--prefix", "neuralreg_d", "drop", "--yes"]) == 0 and dropped == ["neuralreg_d"] * 2
    out = capsys.readouterr().out
    assert "neuralreg_d_experiment" in out and "neuralreg_demo" not in out
    assert cli.main(["drop", "--yes", "--prefix", "neuralreg_x"]) == 1 and len(dropped) == 2
    err = capsys.readouterr().err
    assert "'neuralreg_x' has no schemas" in err and "neuralreg_d, neuralreg_demo" in err
    assert cli.main(["drop", "--yes", "--prefix", "Bad-Prefix"]) == 1 and len(dropped) == 2



def _driver_and_exit_errors():
    import psycopg2
    import pymysql
    return [
        (pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] refused)"),
         "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] refused)"),
        (pymysql.err.OperationalError(1045, "Access denied for user 'neuralreg'@'localhost' (using password: YES)"),
         "Access denied for user 'neuralreg'@'localhost' (using password: YES)"),
        (pymysql.err.OperationalError("a message without a code"), "a message without a code"),
        (psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: FATAL:  role '
                                   '"neuralreg" does not exist\n'),
         'connection to server at "127.0.0.1", port 5432 failed: FATAL: role "neuralreg" does not exist'),
        (psycopg2.OperationalError(), "OperationalError"),
        (pymysql.err.InternalError(1205, "Lock wait timeout exceeded"), "InternalError: Lock wait timeout exceeded"),
        (SystemExit("no computed table named 'Foo'"), "no computed table named 'Foo'"),
        (SystemExit("two\nlines"), "two lines"),
    ]


@pytest.mark.parametrize("error, words", _driver_and_exit_errors(), ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "")
def test_driver_errors_and_exit_messages_are_one_line_from_commands_that_skip_the_database_check(
        error, words, monkeypatch, capsys):
    """`db`, `demo`, `compose-gpus` and `selftest` do not ask the database first: a driver's error raised
    inside them (PyMySQL's (code, message), psycopg2's message, none) and a SystemExit with a message
    become one line and exit 1, never a traceback of the error handler itself (on a fresh PostgreSQL,
    `db worker-user` once died with AttributeError in it)."""
    from neuralreg_schema import compose

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(compose, "write_gpu_override", broken)
    assert cli.main(["compose-gpus", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("neuralreg: error: ") and words in err, err
    assert "2003" not in err and "1045" not in err and "1205" not in err
    if type(error).__name__ == "OperationalError":                   # the drivers' connection errors
        assert "neuralreg: error: database at " in err and "neuralreg db up" in err, err
