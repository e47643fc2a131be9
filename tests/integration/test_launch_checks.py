"""`neuralreg launch slurm` against the database, before any script exists: a prefix with no study is
refused naming the prefixes that exist (array tasks on a mistyped prefix would find nothing and end
"done"), a --tables name that is not a computed table of the study is refused as the worker would
refuse it on every node, an --out folder that does not exist is named; none of them leaves a script or
a logs folder behind. (SLURM itself: test_slurm.py; the script's text: tests/unit/test_launch.py.)"""
import os

from tests.helpers import cli


def _secrets(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    for name in ("database.user", "database.password"):
        (folder / name).write_text("x\n")
        (folder / name).chmod(0o600)
    return folder


def _error(run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("neuralreg: error:")]
    assert run.returncode == 1 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    return lines[0]


def test_launch_refuses_a_missing_study_unknown_tables_and_a_missing_out_folder(modules, prefix, fresh_prefix, tmp_path):
    base = ["launch", "slurm", "--gres", "none", "--secrets", str(_secrets(tmp_path)), "--logs", str(tmp_path / "logs")]
    script = tmp_path / "w.sbatch"
    cases = [
        (fresh_prefix, ["--out", str(script)], [f"prefix {fresh_prefix!r} has no schemas", prefix]),
        (prefix, ["--out", str(script), "--tables", "RegularizedClassifier", "NoSuchTable"],
         ["--tables: no computed table named ['NoSuchTable']", "RegularizedClassifier"]),
        (prefix, ["--out", str(script), "--tables", "classifier.NoSuch;ls"], ["no computed table named"]),
        (prefix, ["--out", str(tmp_path / "missing" / "w.sbatch")], ["--out", str(tmp_path / "missing"), "does not exist"]),
        (prefix, ["--out", str(script), "--partition", "gpu;rm -rf ~"], ["--partition"]),
        (prefix, ["--out", str(script), "--logs", str(tmp_path / "my logs")], ["--logs", "whitespace"]),
    ]
    for study, extra, words in cases:
        run = cli(study, *base, *extra)
        line = _error(run)
        assert all(word in line for word in words), (extra, line)
        assert sorted(os.listdir(tmp_path)) == ["secrets"], (extra, os.listdir(tmp_path))   # no script, no logs

    done = cli(prefix, *base, "--out", str(script), "--tables", "RegularizedClassifier", "evaluation.AttackResult",
               "--partition", "gpu,preempt")
    assert done.returncode == 0, done.stderr[-3000:]
    text = script.read_text()
    assert "--tables RegularizedClassifier evaluation.AttackResult" in text and "#SBATCH --partition=gpu,preempt" in text
    assert sorted(os.listdir(tmp_path)) == ["logs", "secrets", "w.sbatch"]          # no partial file left
