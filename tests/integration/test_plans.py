"""All-or-nothing plans (issue 26): `neuralreg plan` checks everything before it writes (the prefix has
scan groups, the named groups exist, seeds >= 1, the recipes, the attack suite, the data set) and
writes every row in one transaction, so a plan that fails, early or in the middle of its writes,
leaves no row in any table of the prefix; on a prefix with nothing ingested it creates no schema."""
import re

from tests.helpers import cli, run_python

MODULES = ("experiment", "predictive", "similarity", "classifier", "evaluation")


def _schemas(connection, prefix) -> set:
    rows = connection.query(connection.adapter.list_schemas_sql()).fetchall()
    return {r[0] for r in rows if r[0].startswith(prefix + "_")}


def _row_counts(connection, prefix) -> dict:
    """{(schema, table): rows} of every table of the prefix, hidden ones (job queues, lineage) included."""
    counts = {}
    for schema in sorted(_schemas(connection, prefix)):
        tables = connection.query("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                  args=(schema,)).fetchall()
        for (table,) in tables:
            q = connection.adapter.quote_identifier
            counts[(schema, table)] = connection.query(f"SELECT COUNT(*) FROM {q(schema)}.{q(table)}").fetchone()[0]
    return counts


def _error_line(run) -> str:
    """The one error line of a refused command: a runtime refusal (exit 1, 'neuralreg: error: ...') or a
    usage error of the argument parser (exit 2, 'neuralreg plan: error: ...': e.g. --seeds 0)."""
    lines = [line for line in run.stderr.splitlines() if re.match(r"neuralreg( \w+)?: error:", line)]
    assert run.returncode in (1, 2) and len(lines) == 1 and "Traceback" not in run.stderr, (run.stdout[-2000:],
                                                                                          run.stderr[-3000:])
    return lines[0]


# a configuration named 'tiny' with other content than the 'tiny' recipe: `plan tiny` reaches its
# ClassifierConfig only after it has written the predictive and similarity configs and the data set
CLASH = """
import sys
from neuralreg_schema import pipeline
clf = pipeline.activate(sys.argv[1])["classifier"]
if sys.argv[2] == "add":
    clf.ClassifierConfig.add("tiny", name="tiny", epochs=7)
else:
    (clf.ClassifierConfig & {"config_name": "tiny"}).delete(prompt=False)
"""


def test_a_failing_plan_leaves_no_row(modules, fresh_prefix):
    connection = modules["experiment"].schema.connection
    # nothing ingested: refused, naming the first step, and no schema created
    empty = cli(fresh_prefix, "plan", "tiny")
    assert "nothing is ingested" in _error_line(empty) and "ingest simulated" in _error_line(empty)
    assert _schemas(connection, fresh_prefix) == set()

    ingest = cli(fresh_prefix, "ingest", "simulated", "--profile", "tiny", "--seed", "4", timeout=600)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    before = _row_counts(connection, fresh_prefix)
    assert before[(f"{fresh_prefix}_similarity", "scan_group")] == 1
    refused = {("--group", "nonexistent-group"): "no scan group 'nonexistent-group'",
               ("--group", "sim-tiny-4", "nonexistent-group"): "no scan group 'nonexistent-group'",
               ("--seeds", "0"): r"--seeds:? 0",
               ("--seeds", "-2"): r"--seeds:? -2",
               ("--classifier", "no-such-recipe"): "unknown classifier config 'no-such-recipe'",
               ("--model", "no-such-model"): "unknown predictive config 'no-such-model'",
               ("--model-seed", "-1"): r"--model-seed:? -1",
               ("--dataset", "no-such-data"): "unknown data set 'no-such-data'",
               ("--attacks", "no-such-suite"): "unknown attack suite 'no-such-suite'",
               ("--autoattack", "no-such-recipe"): "unknown AutoAttack recipe 'no-such-recipe'"}
    for args, message in refused.items():
        run = cli(fresh_prefix, "plan", "tiny", *args, timeout=600)
        assert re.search(message, _error_line(run)), (args, run.stderr[-2000:])
        assert _row_counts(connection, fresh_prefix) == before, args

    # a failure in the middle of the writes rolls back those before it
    assert run_python(["-c", CLASH, fresh_prefix, "add"]).returncode == 0
    before = _row_counts(connection, fresh_prefix)
    clash = cli(fresh_prefix, "plan", "tiny", timeout=600)
    assert "already names another configuration" in _error_line(clash)
    assert "predictive model config 'tiny'" in clash.stdout          # it had written those rows ...
    assert _row_counts(connection, fresh_prefix) == before            # ... and took them back

    # with the clash gone the same plan writes its rows
    assert run_python(["-c", CLASH, fresh_prefix, "delete"]).returncode == 0
    done = cli(fresh_prefix, "plan", "tiny", "--autoattack", "tiny", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _row_counts(connection, fresh_prefix)
    assert after[(f"{fresh_prefix}_classifier", "classifier_plan")] == 4
    assert after[(f"{fresh_prefix}_classifier", "#classifier_config")] == 1
    assert after[(f"{fresh_prefix}_evaluation", "#auto_attack_config")] == 2      # Linf and L2


def test_plan_similarity_checks_before_it_writes(modules, fresh_prefix):
    connection = modules["experiment"].schema.connection
    for args, message in ((("--model", "no-such-model"), "unknown predictive config"),
                          (("--model-seed", "-3"), "--model-seed -3")):
        run = cli(fresh_prefix, "plan-similarity", *args)
        assert message in _error_line(run)
        assert _schemas(connection, fresh_prefix) == set()
