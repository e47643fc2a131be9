"""The README's real-data path runs to the end as written: `ingest sensorium` -> `group` -> `plan paper
--group` -> `populate` -> `report`, every command with `--prefix`, taken from the README's section
*Importing real data (Sensorium 2022)* and run in subprocesses on a small synthetic Sensorium scan
(tests/sensorium_fixture.py). What the test changes in the README's commands, and only that: the
prefix (a fresh one), the zip names (the fixture's zip), the report folder (a temporary one), and
`plan paper` gets the size options the README names (`--dataset offline --classifier tiny --model tiny
--seeds 1 --attacks tiny --autoattack none`: AutoAttack has tests of its own), so the whole study trains
in a minute or two on a CPU."""
import shlex

import pandas as pd
import pytest

from tests.helpers import ROOT, run_python
from tests.integration.test_readme import BLOCKS
from tests.sensorium_fixture import write_sensorium_fixture

README_PREFIX = "neuralreg_sensorium"
TINY = ["--dataset", "offline", "--classifier", "tiny", "--model", "tiny", "--seeds", "1", "--attacks", "tiny",
        "--autoattack", "none"]


def real_data_commands() -> list[list[str]]:
    """The neuralreg commands of the README's Sensorium section, in order, as argument lists."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Importing real data (Sensorium 2022)")
    section = text[start:text.index("\n## ", start + 1)]
    commands = []
    for lang, body, _ in BLOCKS:
        if lang == "bash" and body in section:
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                if words and words[0] == "neuralreg":
                    commands.append(words[1:])
    return commands


def test_the_readme_names_the_whole_path_with_a_prefix():
    commands = real_data_commands()
    steps = [next(w for w in c if not w.startswith("-") and w != README_PREFIX) for c in commands]
    assert steps == ["ingest", "group", "plan", "populate", "report"], commands
    for c in commands:
        assert c[:2] == ["--prefix", README_PREFIX], c
    plan = commands[2]
    assert plan[2:5] == ["plan", "paper", "--group"] and plan[5] == commands[1][3], (plan, commands[1])


@pytest.mark.slow       # a whole study at tiny size: a few minutes on a loaded 2-core machine
def test_the_readme_real_data_path_runs_as_written(fresh_prefix, tmp_path):
    # two scans of the same images (a group averages over the images its scans share)
    scans = [write_sensorium_fixture(tmp_path / f"scan{i}", animal_id=41000 + i, n_train=40, n_validation=10,
                                     n_oracle=6, n_repeats=4, zip=True, seed=0) for i in range(2)]
    out = tmp_path / "report-sensorium"
    for words in real_data_commands():
        args = [fresh_prefix if w == README_PREFIX else w for w in words]
        if args[2] == "ingest":
            args = args[:4] + [str(p) for p in scans]          # the README's zip names -> the fixture's
        elif args[2] == "plan":
            args += TINY
        elif args[2] == "report":
            args = [a if a != "report-sensorium/" else str(out) for a in args]
        run = run_python(["-m", "neuralreg_schema.cli", *args], timeout=1200)
        assert run.returncode == 0, (args, run.stdout[-3000:], run.stderr[-3000:])
    classifiers = pd.read_csv(out / "classifiers.csv", keep_default_na=False)
    assert set(classifiers["regularizer"]) >= {"None", "Neural (model)", "Neural (data)", "Shuffle"}
    assert set(classifiers["dataset"]) == {"offline"}
    names = {p.name for p in out.iterdir()}
    assert {"fig1_checks.csv", "fig4_noise.csv", "fig7_mean_perturbation.csv", "README.md"} <= names
    assert any(n.startswith("fig1_similarity_sensorium-all") for n in names)
