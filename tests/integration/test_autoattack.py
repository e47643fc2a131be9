"""AutoAttackResult on a tiny trained classifier (AutoAttackConfig rows as `plan --autoattack` adds
them, with two budgets per norm), populated by a job that dies (os._exit, no cleanup) after its 2nd saved
chunk, resumed by the next populate to exactly the rows an uninterrupted run stores (checkpoint gone
after the insert), and read by the report: classifiers.csv gets the robust accuracy per budget and
the cross-check counts against MinimalPerturbation, described in README.md. Real processes (one per
phase), a fresh schema prefix (dropped afterwards), the offline data set. AutoAttack runs in the unit
tests' quick setting (Square 100 queries, FAB 10 iterations, 2 target classes): the standard version
costs minutes per budget on the samples APGD leaves, and tests/unit/test_autoattack.py checks it."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers import run_python

SCRIPT = """
import json, logging, os, sys
import numpy as np
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
clf, ev, aa = m["classifier"], m["evaluation"], m["autoattack"]
phase = sys.argv[2]
aa.ATTACK_CHECKPOINT_INTERVAL = 0.0              # save after every chunk
from neuralreg_schema.compute.evaluation import autoattack as compute
standard = compute._autoattack
def quick(*args, **kwargs):                      # the unit tests' quick setting: the tables are tested here
    attack = standard(*args, **kwargs)
    attack.square.n_queries, attack.fab.n_iter = 100, 10
    attack.fab.n_target_classes = attack.apgd_targeted.n_target_classes = 2
    return attack
compute._autoattack = quick
if phase == "crash":                             # plan, train, attack; then an AutoAttack job that dies
    clf.ClassifierPlan.add(clf.ClassificationDataset.add("offline"),
                           clf.ClassifierConfig.add("tiny", name="aa-test", epochs=1, width=8, max_train=512),
                           clf.Regularizer.add("none"), [0])
    clf.RegularizedClassifier.populate()
    cfg = ev.AttackConfig.add("fmn-l2", {"steps": [20]}, batch_size=8)
    ev.AttackSuite.insert1({"suite": "check", "n_samples": 8, "sample_seed": 0, "attack_seed": 0})
    ev.AttackSuite.Member.insert1({"suite": "check", **cfg})
    ev.AttackResult.populate()
    ev.MinimalPerturbation.populate()
    # 10 samples (the suite's 8 are among them); two budgets per norm
    for norm, eps in (("linf", [8 / 255, 16 / 255]), ("l2", [0.5, 1.0])):
        aa.AutoAttackConfig.add(norm, eps, n_samples=10, batch_size=2, sample_seed=0, attack_seed=1)
    save, saves = aa.StoreCheckpoint.save, []
    def save_then_die(self, state):
        save(self, state)
        saves.append(1)
        if len(saves) == 2:
            os._exit(9)                          # a killed worker: no exception handling, no cleanup
    aa.StoreCheckpoint.save = save_then_die
    aa.AutoAttackResult.populate(aa.AutoAttackConfig & {"norm": "linf"})
else:
    said = []
    class Keep(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())
    logging.getLogger("neuralreg.autoattack").addHandler(Keep())
    logging.getLogger("neuralreg.autoattack").setLevel(logging.INFO)
    if phase == "again":
        (aa.AutoAttackResult & (aa.AutoAttackConfig & {"norm": "linf"}).keys()).delete(prompt=False)
    aa.AutoAttackResult.populate()
    rows = {}
    for r in (aa.AutoAttackResult * aa.AutoAttackConfig.proj("norm")).to_dicts():
        parts = (aa.AutoAttackResult.Budget & {"aa_hash": r["aa_hash"]}).to_dicts(order_by="eps_index")
        rows[r["norm"]] = {"robust": [np.asarray(p["robust"]).tolist() for p in parts],
                           "accuracy": [p["robust_accuracy"] for p in parts], "attacked": [p["attacked"] for p in parts],
                           "epsilons": [p["epsilon"] for p in parts], "distance": np.asarray(r["distance"]).tolist(),
                           "index": np.asarray(r["sample_index"]).tolist(),
                           "clean_correct": np.asarray(r["clean_correct"]).tolist()}
    minimal = {n["norm"]: {"d": np.asarray(n["distances"]).tolist()} for n in ev.MinimalPerturbation.Norm.to_dicts()}
    mp = ev.MinimalPerturbation.fetch1()
    if phase == "again":
        from neuralreg_schema.report import write_report
        write_report(sys.argv[1], sys.argv[3])
    from neuralreg_schema import queries
    tidy = queries.autoattack(m)
    print(json.dumps({"resumed": any("resuming" in s for s in said), "rows": rows, "minimal": minimal,
                      "tidy": tidy.to_dict(orient="list"), "tidy_index": type(tidy.index).__name__,
                      "mp_index": np.asarray(mp["sample_index"]).tolist(),
                      "mp_correct": np.asarray(mp["clean_correct"]).tolist()}))
"""


def _checkpoints(prefix):
    root = Path(os.environ["NEURALREG_STORE"]) / "_checkpoints" / f"{prefix}_evaluation"
    return list(root.rglob("*.pt")) if root.exists() else []


def _run(prefix, phase, out_dir=""):
    return run_python(["-c", SCRIPT, prefix, phase, str(out_dir)], timeout=600)


def test_autoattack_resumes_and_feeds_the_cross_check(fresh_prefix, tmp_path):
    out = _run(fresh_prefix, "crash")
    assert out.returncode == 9, (out.returncode, out.stderr[-3000:])
    assert len(_checkpoints(fresh_prefix)) == 1                  # the progress of the dead job
    out = _run(fresh_prefix, "resume")
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["resumed"] and _checkpoints(fresh_prefix) == []
    out = _run(fresh_prefix, "again", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    whole = json.loads(out.stdout.strip().splitlines()[-1])
    assert not whole["resumed"]
    assert resumed["rows"]["linf"] == whole["rows"]["linf"]
    for norm, r in whole["rows"].items():
        robust = np.asarray(r["robust"], bool)
        assert robust.shape == (len(r["epsilons"]), 10)
        assert (robust[1:] <= robust[:-1]).all()                 # nested: robust at a budget -> robust below
        assert r["attacked"][1:] == robust[:-1].sum(axis=1).tolist()
    # the report: AutoAttack's columns and the cross-check, recomputed here from the rows
    table = pd.read_csv(tmp_path / "classifiers.csv")
    readme = (tmp_path / "README.md").read_text()
    mp_index, mp_correct = np.asarray(whole["mp_index"]), np.asarray(whole["mp_correct"], bool)
    for norm, r in whole["rows"].items():
        robust, index = np.asarray(r["robust"], bool), np.asarray(r["index"])
        correct = np.asarray(r["clean_correct"], bool)
        missed = 0
        for j, i in enumerate(mp_index):
            k = int(np.flatnonzero(index == i)[0])
            fooled = np.flatnonzero(~robust[:, k])
            if correct[k] and mp_correct[j] and len(fooled):
                missed += whole["minimal"][norm]["d"][j] > r["epsilons"][fooled[0]] + 1e-6
        assert table[f"autoattack_missed_{norm}_check"].tolist() == [missed]
        assert table[f"autoattack_compared_{norm}_check"].tolist() == [int((correct[np.isin(index, mp_index)]
                                                                            & mp_correct).sum())]
        label = "8_255" if norm == "linf" else "0.5"
        assert table[f"autoattack_robust_accuracy_{norm}_{label}"].tolist() == [r["accuracy"][0]]
        assert f"`autoattack_missed_{norm}_check` | cross-check" in readme
    # the named query: one row per norm and budget, the same numbers, labels first
    tidy = pd.DataFrame(whole["tidy"])
    assert whole["tidy_index"] == "RangeIndex" and len(tidy) == 4 and set(tidy["regularizer"]) == {"None"}
    for norm, r in whole["rows"].items():
        mine = tidy[tidy["norm"] == norm]
        assert mine["epsilon"].tolist() == r["epsilons"] and mine["robust_accuracy"].tolist() == r["accuracy"]
        assert mine["attacked"].tolist() == r["attacked"] and set(mine["version"]) == {"standard"}
        assert np.allclose(mine["clean_accuracy"], np.mean(r["clean_correct"])) and set(mine["n_samples"]) == {10}
    summary = pd.read_csv(tmp_path / "autoattack.csv")
    assert set(summary["norm"]) == {"linf", "l2"} and len(summary) == 4 and "(not described)" not in readme
