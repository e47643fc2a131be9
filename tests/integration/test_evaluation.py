"""The evaluation branch of the DAG on the classifiers of the tiny study (trained by the fixtures of
tests/integration/conftest.py): NoiseRobustness against compute.evaluation.noise on the stored network,
AttackResult and MinimalPerturbation on the tiny attack suite, and the report's figures and tables."""
import numpy as np
import pandas as pd
import pytest


def test_noise_robustness_and_report(modules, prefix, trained_classifiers, tmp_path):
    """NoiseRobustness equals compute.evaluation.noise on the stored network; the report draws Figs. 1 and 4."""
    study = trained_classifiers
    from neuralreg_schema import report
    from neuralreg_schema.compute.evaluation import noise
    ev, clf, sim = modules["evaluation"], modules["classifier"], modules["similarity"]
    sim.SimilarityStability.populate({"scan_group": study["group"]}, reserve_jobs=True)
    cfg_key = ev.NoiseConfig.add("test", [0.0, 0.05, 0.2], noise_seed=1)
    with pytest.raises(ValueError, match="other settings"):
        ev.NoiseConfig.add("test", [0.0, 0.1])
    result = ev.NoiseRobustness.populate(cfg_key, reserve_jobs=True, suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    assert len(ev.NoiseRobustness & cfg_key) == len(clf.RegularizedClassifier & study["config"])
    data = clf.ClassificationDataset.load(study["dataset"])
    key = {**study["dataset"], **study["config"], **study["regs"]["Shuffle"], "seed": 0}
    acc, correct = noise.noise_accuracy(clf.RegularizedClassifier().network(key), data.test_images, data.test_labels,
                                        [0.0, 0.05, 0.2], seed=1)
    levels = (ev.NoiseRobustness.Level & key & cfg_key).to_dicts(order_by="level")
    np.testing.assert_allclose([lv["accuracy"] for lv in levels], acc)
    np.testing.assert_array_equal(np.stack([lv["correct"] for lv in levels]), correct)
    row = (ev.NoiseRobustness & key & cfg_key).fetch1()
    assert row["clean_accuracy"] == pytest.approx((clf.RegularizedClassifier & key).fetch1("test_accuracy"))
    assert row["n_samples"] == len(data.test_images) and row["device"] == "cpu"

    written = {p.name for p in report.write_report(prefix, tmp_path)}
    assert {"classifiers.csv", "table1_gamma.csv", "fig4_noise.csv", "fig1_checks.csv"} <= written
    assert any(n.startswith("fig4_noise_") and n.endswith(".png") for n in written)
    assert any(n.startswith("fig1_similarity_") for n in written)
    fig4 = pd.read_csv(tmp_path / "fig4_noise.csv", keep_default_na=False)     # the label "None" is not NaN
    assert set(fig4["regularizer"]) == {"None", "Neural (model)", "Neural (data)", "Shuffle"}
    assert fig4["display_name"].str.contains("stand-in").all()
    gamma = pd.read_csv(tmp_path / "table1_gamma.csv")
    assert np.allclose(gamma.filter(like="gamma_").sum(axis=1), 1.0, atol=5e-4)   # each gamma to 4 digits
    (ev.NoiseConfig & cfg_key).delete(prompt=False)


def test_attacks_and_minimal_perturbation(modules, prefix, trained_classifiers, tmp_path):
    """AttackResult per attack of the tiny suite on two classifiers; MinimalPerturbation is the
    per-sample minimum over them; the same samples for every model; Fig. 5 is drawn."""
    study = trained_classifiers
    from neuralreg_schema import report
    ev = modules["evaluation"]
    suite = ev.AttackSuite.add_recipe("tiny")
    assert ev.AttackSuite.add_recipe("tiny") == suite
    with pytest.raises(ValueError, match="other settings"):
        ev.AttackSuite.add_recipe("tiny", sample_seed=5)
    keys = [{**study["dataset"], **study["config"], **study["regs"][label], "seed": 0}
            for label in ("None", "Neural (model)")]
    for key in keys:
        result = ev.AttackResult.populate(key, suite, reserve_jobs=True, suppress_errors=True)
        assert not result["error_list"], result["error_list"]
        ev.MinimalPerturbation.populate(key, suite)
    n_attacks = len(ev.AttackSuite.Member & suite)
    assert len(ev.AttackResult & suite) == 2 * n_attacks and len(ev.MinimalPerturbation & suite) == 2
    indices = {tuple(i) for i in (ev.AttackResult & suite).to_arrays("sample_index")}
    assert len(indices) == 1                                          # the same samples for every model and attack
    for key in keys:
        rows = (ev.AttackResult & key & suite).to_dicts()
        stack = np.stack([np.asarray(r["distances"].load()) for r in rows])          # (attacks, n, 4)
        assert not np.isnan(stack).any() and (stack >= 0).all()
        for i, norm in enumerate(("l0", "l1", "l2", "linf")):
            part = (ev.MinimalPerturbation.Norm & key & suite & {"norm": norm}).fetch1()
            np.testing.assert_array_equal(part["distances"], stack[:, :, i].min(axis=0))
            expected = np.median(stack[:, :, i].min(axis=0))
            assert (part["median"] is None and not np.isfinite(expected)) or part["median"] == pytest.approx(expected)
        for r in rows:
            d = np.asarray(r["distances"].load())
            assert np.all((d[~r["success"]] == np.inf)) and np.all(np.isfinite(d[r["success"]]))
            assert r["device"] == "cpu" and r["runs"]
            # the budget curve of each attack ends at its final result
            budgets = (ev.AttackResult.Budget & key & {"attack_hash": r["attack_hash"]}).to_dicts(order_by="budget")
            assert len(budgets) >= 2 and budgets[-1]["budget"] == max(p["params"]["steps"] for p in r["runs"])
            np.testing.assert_array_equal(budgets[-1]["distances"], d)
            # one Queries row per run, counted at the model (tests/unit/test_queries.py checks the counts)
            queries = (ev.AttackResult.Queries & key & {"attack_hash": r["attack_hash"]}).to_dicts(order_by="run")
            assert len(queries) == len(r["runs"])
            for q, run in zip(queries, r["runs"]):
                assert q["forward_rows"] > 0 and q["attacked"] == int(np.sum(r["clean_correct"]))
                assert q["queries_per_sample"] == pytest.approx((q["forward_rows"] + q["gradient_rows"]) / q["attacked"])
                assert len(q["used"]) == q["attacked"] and int(np.sum(q["used"])) == run["iterations"]
        master = (ev.MinimalPerturbation & key & suite).fetch1()
        correct = np.asarray(master["clean_correct"], bool)
        assert master["n_correct"] == correct.sum() and master["n_attacks"] == n_attacks
        for norm_row in (ev.MinimalPerturbation.Norm & key & suite).to_dicts():
            d = np.asarray(norm_row["distances"], float)
            assert (d[~correct] == 0).all()                       # clean errors count as distance 0
            for name, values in (("", d), ("_correct", d[correct])):
                stored_median, stored_mean = norm_row[f"median{name}"], norm_row[f"mean{name}"]
                if np.isfinite(values).all() and len(values):
                    assert stored_mean == pytest.approx(values.mean())
                    if len(values) > 1:
                        assert norm_row[f"sem{name}"] == pytest.approx(values.std(ddof=1) / np.sqrt(len(values)))
                    else:
                        assert norm_row[f"sem{name}"] is None       # undefined for one sample
                else:
                    assert stored_mean is None
                expected = np.median(values) if len(values) else np.nan
                assert (stored_median is None and not np.isfinite(expected)) or stored_median == pytest.approx(expected)
            curve = (ev.MinimalPerturbation.Budget & key & suite & {"norm": norm_row["norm"]}).to_dicts(order_by="budget")
            assert len(curve) >= 3                               # the tiny suite's budgets: 1, 2, 3, 4, 5, 10
            np.testing.assert_array_equal(curve[-1]["distances"], d)       # the largest budget: the final score
            first = np.asarray(curve[0]["distances"])
            assert np.isinf(first[correct]).sum() >= np.isinf(d[correct]).sum()
    written = {p.name for p in report.write_report(prefix, tmp_path)}
    assert {"fig5_minimal_perturbation.csv", "fig7_mean_perturbation.csv", "classifiers.csv"} <= written
    assert any(n.startswith("fig5_minimal_perturbation_") and n.endswith(".png") for n in written)
    assert any(n.startswith("fig7_mean_perturbation_") and n.endswith(".png") for n in written)
    fig5 = pd.read_csv(tmp_path / "fig5_minimal_perturbation.csv", keep_default_na=False)
    assert fig5.query("suite == 'tiny'")["budget"].nunique() >= 3
    # Fig. 5's x: the suite's measured queries per sample, growing with the budget
    for _, curve in fig5.groupby(["regularizer", "norm"]):
        q = curve.sort_values("budget")["queries_mean"].astype(float).to_numpy()
        assert (q > 0).all() and (np.diff(q) >= 0).all()
    per_attack = pd.read_csv(tmp_path / "attack_queries.csv", keep_default_na=False)
    from neuralreg_schema.compute.evaluation.recipes import recipe
    assert set(per_attack["attack"]) == set(recipe("tiny")["attacks"])
    assert len(per_attack) == 2 * n_attacks and (per_attack["queries_per_sample"].astype(float) > 0).all()
    fig7 = pd.read_csv(tmp_path / "fig7_mean_perturbation.csv", keep_default_na=False)
    assert {"fooled_fraction_mean", "mean_distance_fooled_mean"} <= set(fig7.columns)
    # robust accuracy at RobustBench's budgets, from the stored per-sample distances
    table = pd.read_csv(tmp_path / "classifiers.csv", keep_default_na=False)
    for key in keys:
        row = table.set_index(["clf_hash", "reg_hash", "seed"]).loc[(key["clf_hash"], key["reg_hash"], 0)]
        for norm, eps, column in (("linf", 8 / 255, "robust_accuracy_linf_8_255_tiny"), ("l2", 0.5, "robust_accuracy_l2_0.5_tiny")):
            d = np.asarray((ev.MinimalPerturbation.Norm & key & suite & {"norm": norm}).fetch1("distances"))
            assert float(row[column]) == pytest.approx(np.mean(d > eps), abs=1e-4)   # 4 significant digits
        correct = np.asarray((ev.MinimalPerturbation & key & suite).fetch1("clean_correct"), bool)
        assert float(row["attacked_clean_accuracy_tiny"]) == pytest.approx(correct.mean(), abs=1e-4)
    # a minimum depends on every attack result it was taken over: deleting one takes the minimum with it
    assert len(ev.MinimalPerturbation.Member & keys[0] & suite) == n_attacks
    one = (ev.AttackResult & keys[0] & suite).keys(order_by="attack_hash")[0]
    (ev.AttackResult & one).delete(prompt=False, part_integrity="cascade")
    assert not (ev.MinimalPerturbation & keys[0] & suite)
    assert len(ev.MinimalPerturbation & keys[1] & suite) == 1                  # the other classifier's stays
    (ev.AttackSuite & suite).delete(prompt=False)


def test_corruption_accuracy_on_a_tiny_set(modules, prefix, trained_classifiers, tmp_path):
    """A tiny corruption set in the published layout (3 corruptions x 5 severities x 8 images of the
    offline data set's first test images): imported (a malformed one refused, nothing written),
    CorruptionAccuracy equals compute.evaluation.corruptions on the stored network, the report draws it."""
    study = trained_classifiers
    from neuralreg_schema import corruptions as ctables, report
    from neuralreg_schema.compute.evaluation import corruptions as C
    from tests.unit.test_corruptions import NAMES, make_layout
    clf = modules["classifier"]
    data = clf.ClassificationDataset.load(study["dataset"])
    wrong = make_layout(tmp_path / "wrong", labels=(data.test_labels[:8] + 1) % 10)
    with pytest.raises(C.CorruptionSetError, match="not the first 8 test labels"):
        ctables.CorruptionSet.import_folder(wrong, "offline", "tiny-c", corruptions=NAMES)
    broken = make_layout(tmp_path / "broken", labels=data.test_labels[:8])
    (broken / "contrast.npy").write_bytes((broken / "contrast.npy").read_bytes()[:-7])
    with pytest.raises(C.CorruptionSetError, match="contrast.npy: truncated"):
        ctables.CorruptionSet.import_folder(broken, "offline", "tiny-c", corruptions=NAMES)
    from neuralreg_schema import cli
    assert cli.main(["--prefix", prefix, "corruptions", "import", str(broken), "--dataset", "offline",
                     "--corruptions", *NAMES]) == 1                      # the CLI: one line, exit 1
    assert not ctables.CorruptionSet() and not ctables.CorruptionSet.Corruption()
    folder = make_layout(tmp_path / "c", labels=data.test_labels[:8])
    key = ctables.CorruptionSet.import_folder(folder, "offline", "tiny-c", corruptions=NAMES)
    assert ctables.CorruptionSet.import_folder(folder, "offline", "tiny-c", corruptions=NAMES) == key
    assert len(ctables.CorruptionSet.Corruption & key) == 3
    result = ctables.CorruptionAccuracy.populate(key, reserve_jobs=True, suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    assert len(ctables.CorruptionAccuracy & key) == len(clf.RegularizedClassifier & study["config"])
    clf_key = {**study["dataset"], **study["config"], **study["regs"]["None"], "seed": 0}
    net = clf.RegularizedClassifier().network(clf_key)
    cset = C.read_corruption_set(folder, NAMES)
    rows = (ctables.CorruptionAccuracy.Severity & clf_key & key).to_dicts()
    assert len(rows) == 15
    for name in NAMES:
        expected = C.corruption_accuracy(net, cset.images[name], cset.labels)
        got = [r["accuracy"] for r in sorted(rows, key=lambda r: r["severity"]) if r["corruption"] == name]
        np.testing.assert_allclose(got, expected)
    row = (ctables.CorruptionAccuracy & clf_key & key).fetch1()
    assert row["mean_accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in rows]))
    from neuralreg_schema import queries                                 # the named query: the same rows, labelled
    tidy = queries.corruptions(modules)
    mine = tidy[(tidy["regularizer"] == "None") & (tidy["seed"] == 0) & (tidy["corruption_set"] == "tiny-c")]
    assert len(mine) == 15 and list(tidy.columns) == queries.CORRUPTION_COLUMNS
    assert set(mine["is_published"]) == {True} and set(mine["clean_accuracy"]) == {row["clean_accuracy"]}
    for r in rows:
        one = mine[(mine["corruption"] == r["corruption"]) & (mine["severity"] == r["severity"])]
        assert one["accuracy"].tolist() == [r["accuracy"]]
    written = {p.name for p in report.write_report(prefix, tmp_path / "report")}
    assert "corruptions.csv" in written and any(n.startswith("corruptions_") and n.endswith(".png") for n in written)
    table = pd.read_csv(tmp_path / "report" / "corruptions.csv", keep_default_na=False)
    assert set(table["corruption"]) == set(NAMES) | {"mean"} and set(table["severity"]) == set(range(6))
    (ctables.CorruptionSet & key).delete(prompt=False)
