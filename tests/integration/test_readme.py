"""Every code block of README.md is executed or checked here, so that what a user copies works.

- ```python blocks run, in order, as one script in a subprocess (each process binds one schema
  prefix) against a tiny demo study (`neuralreg demo --profile tiny` into a fresh prefix, dropped
  afterwards): the README's prefix `neuralreg_demo` is replaced by the study's, and the demo
  profile's scan key by the tiny profile's (same encoding, `9PSSSSAA`). Checks on what the blocks
  computed follow the script.
- ```bash blocks: each command is either RUN against that study (cheap and harmless: `--help`,
  `status`, `db status`, `jobs`, `report`) or only PARSED, by the argument parser that would run it
  (`neuralreg`'s, the worker's) or, for Docker Compose, against docker-compose.yml. Why a command is
  only parsed is said in PARSE_ONLY; a command the test does not know fails it, so a new README
  command has to be classified here.
- ```text blocks (output listings, layout trees) are not code; every block must say which it is.
"""
import argparse
import json
import os
import re
import shlex
import subprocess

import pytest
import yaml

from tests.helpers import ROOT, cli, run_python

README = ROOT / "README.md"

# neuralreg subcommands the test runs against the tiny study (read-only, or a no-op on a study
# without errors), by their first words
RUN = {("--help",), ("--version",), ("status",), ("db", "status"), ("jobs",), ("jobs", "errors"), ("jobs", "retry"),
       ("jobs", "reclaim"), ("report",)}
# commands only parsed, and why
PARSE_ONLY = {
    ("demo",): "the whole demo (11 minutes); the fixture runs it at tiny size, tests/integration/test_demo.py too",
    ("test",): "the whole suite, of which this test is a part",
    ("db", "down"): "would stop a database server other tests use",
    ("drop",): "asks for the prefix to be typed back; tests/integration/test_cli.py drops a prefix",
    ("populate",): "a worker pass; tests/integration/test_worker.py runs workers",
    ("compose-gpus",): "writes docker-compose.gpus.yml into the checkout; tests/unit/test_compose.py runs it",
    ("jobs", "ignore"): "marks a key of a real scan as ignored",
    ("plan",): "plan paper downloads CIFAR; the plans are run by tests/integration/test_classifier.py",
    ("ingest",): "needs the Sensorium zips; tests/integration/test_sensorium_ingest.py ingests a fixture",
    ("group",): "changes the study's scan groups",
    ("plan-similarity",): "plans predictive models for the study's scans",
    ("worker",): "a worker runs until its work is done or forever; tests/integration/test_worker.py runs it",
    ("docker",): "no Docker engine here: the services and files it names are checked in docker-compose.yml",
    ("selftest",): "minutes, and --device cuda needs a GPU; tests/integration/test_selftest.py runs the CPU quick path",
}


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number of the opening fence) of every fenced block."""
    blocks, lang, start, body = [], None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), i, []
            else:
                blocks.append((lang, "\n".join(body), start))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md: the block opened at line {start} is not closed"
    return blocks


BLOCKS = code_blocks(README.read_text())


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a bash block as argument lists, comments and environment assignments left
    out; a `for ... do CMD & done` loop gives its CMD."""
    commands = []
    for line in block.splitlines():
        loop = re.fullmatch(r"\s*for \w+ in [^;]+; do (.+?) &? ?done\s*", line.split("#")[0])
        if loop:
            assert subprocess.run(["bash", "-n", "-c", line]).returncode == 0, line
            line = loop.group(1)
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def kind(words: list[str]) -> tuple[str, list[str], tuple]:
    """('neuralreg' | 'worker' | 'docker', arguments, classification key) of one command; the key is
    the subcommand's first words, options (`--prefix P`, `--json`) left out."""
    if words[0] in ("./run.sh", "neuralreg"):
        args = words[1:]
        plain, i = [], 0
        while i < len(args):
            if args[i] in ("--prefix", "--threads"):
                i += 2
                continue
            if not args[i].startswith("-") or not plain:
                plain.append(args[i])
            i += 1
        key = tuple(plain[:2]) if tuple(plain[:2]) in RUN | set(PARSE_ONLY) else tuple(plain[:1])
        return "neuralreg", args, key
    if words[:3] == ["python", "-m", "populate.worker"]:
        return "worker", words[3:], ("worker",)
    if words[0] == "docker":
        return "docker", words[1:], ("docker",)
    raise AssertionError(f"README command {' '.join(words)!r} is neither run nor parsed by this test: "
                         f"classify it in tests/integration/test_readme.py")


def test_every_block_is_tagged_and_the_commands_are_known():
    assert BLOCKS, "README.md has no code blocks"
    for lang, body, line in BLOCKS:
        assert lang in ("bash", "python", "text"), f"README.md line {line}: tag the block bash, python or text"
        if lang == "bash":
            for words in shell_commands(body):
                _, _, key = kind(words)
                assert key in RUN or key in PARSE_ONLY, f"README.md line {line}: {' '.join(words)!r} is not classified"


def test_parse_only_commands_parse():
    """Every PARSE_ONLY command is accepted by the parser that would run it."""
    from neuralreg_schema import cli as neuralreg_cli
    from populate import worker
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    run_sh = (ROOT / "run.sh").read_text()
    parsed = 0
    for lang, body, line in BLOCKS:
        if lang != "bash":
            continue
        for words in shell_commands(body):
            program, args, key = kind(words)
            if key in RUN:
                continue
            parsed += 1
            if program == "neuralreg":
                if words[0] == "./run.sh" and args[0] == "test":
                    assert re.search(r"^\s*test\)", run_sh, re.M), "run.sh has no test command"
                    continue
                if words[0] == "./run.sh" and "NEURALREG_TORCH" in body:
                    # the variable reaches pip as several arguments (unquoted), so an index URL works
                    assert "pip install -q ${NEURALREG_TORCH" in run_sh
                ns = neuralreg_cli.build_parser().parse_args(args)
                assert callable(ns.func), (line, words)
            elif program == "worker":
                parser = worker.add_options(argparse.ArgumentParser())
                parser.parse_args(args)
            else:
                files = [args[i + 1] for i, a in enumerate(args) if a == "-f"]
                for f in files:
                    assert (ROOT / f).exists() or f == "docker-compose.gpus.yml", f   # the latter: compose-gpus writes it
                services = [a for a in args[args.index("-d") + 1:]] if "-d" in args else []
                for s in services:
                    assert s in compose["services"], f"README.md line {line}: no compose service {s!r}"
    assert parsed >= 10


@pytest.mark.slow       # the tiny demo the fixture runs: about a minute
def test_cheap_commands_run(tiny_demo, tmp_path):
    """The RUN commands of the README run against the tiny study and exit 0."""
    from populate import plans
    ran = set()
    for lang, body, line in BLOCKS:
        if lang != "bash":
            continue
        for words in shell_commands(body):
            program, args, key = kind(words)
            if key not in RUN:
                continue
            # the README's prefix (the demo's, or a real study's) is here the tiny study's
            args = [tiny_demo if a == plans.DEMO_PREFIX or (i and args[i - 1] == "--prefix") else a
                    for i, a in enumerate(args)]
            if key == ("report",):
                args = [str(tmp_path / "report") if i and args[i - 1] == "--out" else a for i, a in enumerate(args)]
            result = cli(tiny_demo, *args, timeout=600)
            assert result.returncode == 0, (line, words, result.stdout[-2000:], result.stderr[-2000:])
            ran.add(key)
            if key == ("status",):
                assert "RegularizedClassifier" in result.stdout
                if "--json" in args:
                    assert json.loads(result.stdout)["prefix"] == tiny_demo
            if key == ("report",):
                assert list((tmp_path / "report").glob("*.png")) and list((tmp_path / "report").glob("*.csv"))
    assert {("status",), ("db", "status"), ("jobs",), ("report",)} <= ran


CHECKS = """
# checks on what the README's blocks computed (not part of the README)
assert len(w) > 0 and set(w["snr_weight"].notna()) == {True}
assert 0 < len(reliable) <= len(w)
assert responses.shape[1] == len(w)
assert len(v) == len(w) and "test_corr" in v.columns
assert S.shape == (len(ids), len(ids)) and target.load().shape[0] >= 2
assert len(est) == len(true) > 0
table = runs.proj("label", "cfg_alpha").to_pandas()
assert set(table["label"]) == {"None", "Neural (model)", "Neural (data)", "Shuffle"}
assert logits.shape == (1, 10)
assert len(tidy) == len(clf.RegularizedClassifier()) > 0 and tidy["regularizer"].notna().all()
assert not noise.duplicated(["dataset_name", "clf_hash", "reg_hash", "seed", "noise_name", "noise_sd"]).any()
assert len(queries.similarity_checks(mods)) == len(mods["similarity"].SimilarityStability.Member())
print("README python blocks: OK")
"""


@pytest.mark.slow       # the tiny demo the fixture runs: about a minute
def test_python_blocks_run(tiny_demo):
    from neuralreg_schema.compute.experiment import simulate
    from populate import plans
    text = README.read_text()
    assert f'"{plans.DEMO_PREFIX}"' in text
    demo_id = simulate.animal_id_base(simulate.PROFILES["demo"], 0) + 1
    tiny_id = simulate.animal_id_base(simulate.PROFILES["tiny"], 0) + 1
    assert f'"animal_id": {demo_id}' in text, "the README's scan key is not the demo's first scan"
    script = "\n\n".join(body for lang, body, _ in BLOCKS if lang == "python")
    script = script.replace(f'"{plans.DEMO_PREFIX}"', f'"{tiny_demo}"').replace(str(demo_id), str(tiny_id))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = run_python(["-c", script + CHECKS], env=env, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "README python blocks: OK" in result.stdout


def test_license_and_citation_the_readme_links():
    """LICENSE is the MIT license pyproject.toml declares; CITATION.cff is valid YAML with the keys
    CFF 1.2.0 requires (cff-version, message, title, authors) and cites the paper it implements."""
    import tomllib
    license_text = (ROOT / "LICENSE").read_text()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]      # an SPDX expression
    assert declared == "MIT" and license_text.startswith("MIT License")
    assert "the neuralreg authors" in license_text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= set(cff) and cff["cff-version"] == "1.2.0"
    assert cff["license"] == declared and cff["authors"]
    paper = cff["preferred-citation"]
    assert paper["title"] == "Learning From Brains How to Regularize Machines" and paper["year"] == 2019
    assert [a["family-names"] for a in paper["authors"]][:2] == ["Li", "Brendel"] and len(paper["authors"]) == 10
    for name in ("LICENSE", "CITATION.cff"):
        assert f"]({name})" in README.read_text()
