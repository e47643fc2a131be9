"""RegularizedClassifier on the tiny simulated study and the offline stand-in data set: the target is
held back until its AveragedSimilarity exists; every regularizer trains; rows, history and layer
weights agree with the stored network and the target matrix."""
import numpy as np
import pandas as pd
import pytest
import torch

from neuralreg_schema import cli
from neuralreg_schema.compute import similarity_loss, simulate, train_classifier
from populate import plans

SEED = 11   # simulated experiment of this module (other modules use other seeds)


@pytest.fixture(scope="module")
def study(modules, prefix):
    exp, pred, sim, clf = (modules[m] for m in ("experiment", "predictive", "similarity", "classifier"))
    assert cli.main(["--prefix", prefix, "ingest", "simulated", "--profile", "tiny", "--seed", str(SEED)]) == 0
    experiment = simulate.simulate_experiment("tiny", seed=SEED)
    group = experiment.image_set.name
    model = pred.PredictiveModelConfig.add("tiny")
    dataset = clf.ClassificationDataset.add("offline")
    config = clf.ClassifierConfig.add("tiny")
    regs = clf.Regularizer.add_standard(group, model)
    clf.ClassifierPlan.add(dataset, config, list(regs.values()), [0])
    yield {"experiment": experiment, "group": group, "model": model, "dataset": dataset, "config": config,
           "regs": regs}
    clf.ClassifierPlan.delete(prompt=False)
    clf.Regularizer.delete(prompt=False)
    clf.ClassifierConfig.delete(prompt=False)
    clf.Seed.delete(prompt=False)
    sim.SimilarityConfig.delete(prompt=False)
    pred.PredictiveModelConfig.delete(prompt=False)
    (sim.ScanGroup & {"scan_group": group}).delete(prompt=False)


def test_targets_hold_regularized_jobs_back(modules, study):
    clf, sim, pred, exp = (modules[m] for m in ("classifier", "similarity", "predictive", "experiment"))
    ready = clf.RegularizedClassifier.key_source & study["config"]
    kinds = set((clf.Regularizer & ready.proj()).to_arrays("kind"))
    assert kinds == {"none"}          # no averaged matrix yet
    scans = exp.Scan & (sim.ScanGroup.Member & {"scan_group": study["group"]})
    exp.Neuron.populate(scans)
    # only this module's scans: other modules leave deliberately failing keys in the shared prefix
    for table, restriction in ((pred.PredictiveModel, scans), (sim.SimilarityMatrix, scans),
                               (sim.AveragedSimilarity, {"scan_group": study["group"]})):
        result = table.populate(restriction, reserve_jobs=True, suppress_errors=True)
        assert not result["error_list"], result["error_list"]
    ready = clf.RegularizedClassifier.key_source & study["config"]
    assert set((clf.Regularizer & ready.proj()).to_arrays("kind")) == {"none", "neural-model", "neural-data", "shuffle"}


def test_every_regularizer_trains(modules, study):
    clf = modules["classifier"]
    result = clf.RegularizedClassifier.populate(study["config"], reserve_jobs=True, suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    assert len(clf.RegularizedClassifier & study["config"]) == 4
    cfg = (clf.ClassifierConfig & study["config"]).fetch1("config")
    for label, reg in study["regs"].items():
        key = {**study["dataset"], **study["config"], **reg, "seed": 0}
        row = (clf.RegularizedClassifier & key).fetch1()
        history = (clf.RegularizedClassifier.Epoch & key).to_dicts(order_by="epoch")
        assert [h["epoch"] for h in history] == list(range(1, cfg["epochs"] + 1)) == list(range(1, row["epochs_run"] + 1))
        assert row["resumed_from_epoch"] == 0
        assert row["torch_version"] == torch.__version__ and row["device"] == "cpu" and row["code_version"]
        gammas = (clf.RegularizedClassifier.LayerWeight & key).to_arrays("layer", "gamma", order_by="layer")
        if label == "None":
            assert row["alpha"] == 0 and row["pairs_per_step"] == 0 and row["heldout_loss"] is None
            assert not (clf.RegularizedClassifier.Target & key)
            assert len(gammas[0]) == 0 and all(h["similarity_loss"] is None for h in history)
        else:
            assert row["alpha"] == cfg["alpha"] and row["pairs_per_step"] == cfg["stim_batch"] * (cfg["stim_batch"] - 1) // 2
            np.testing.assert_array_equal(gammas[0], cfg["layers"])
            assert gammas[1].sum() == pytest.approx(1.0) and np.all(gammas[1] > 0)
            np.testing.assert_allclose(history[-1]["gamma"], gammas[1])
            assert row["n_stimuli_train"] + row["n_stimuli_heldout"] == \
                len(clf.load_target(key).image_ids) and row["n_stimuli_heldout"] > 1
            # the target it was trained towards is a dependency: deleting it would delete the classifier
            target = (clf.RegularizedClassifier.Target & key).fetch1()
            assert (target["scan_group"], target["sim_hash"]) == \
                tuple((clf.Regularizer & reg).fetch1("scan_group", "sim_hash"))
        # the stored network reproduces the stored clean accuracy
        data = clf.ClassificationDataset.load(study["dataset"])
        net = clf.RegularizedClassifier().network(key)
        x = torch.as_tensor(data.test_images)[:, None].float() / 255
        acc = train_classifier.accuracy(net, x, torch.as_tensor(data.test_labels))
        assert acc == pytest.approx(row["test_accuracy"]) == pytest.approx(history[-1]["test_accuracy"])


def test_heldout_loss_matches_the_target(modules, study):
    """The stored held-out loss is Eq. 8 between the stored network's features and the averaged matrix."""
    clf, sim = modules["classifier"], modules["similarity"]
    reg = study["regs"]["Neural (model)"]
    key = {**study["dataset"], **study["config"], **reg, "seed": 0}
    row = (clf.RegularizedClassifier & key).fetch1()
    target = clf.load_target(key)
    stored = (sim.AveragedSimilarity & {"scan_group": study["group"],
                                        "sim_hash": (clf.Regularizer & reg).fetch1("sim_hash")}).fetch1()
    np.testing.assert_array_equal(target.matrix, np.asarray(stored["matrix"].load()))
    cfg = (clf.ClassifierConfig & study["config"]).fetch1("config")
    _, held = train_classifier.heldout_split(len(target.image_ids), cfg["heldout_fraction"], cfg["heldout_max"])
    net = clf.RegularizedClassifier().network(key)
    gamma = torch.as_tensor((clf.RegularizedClassifier.LayerWeight & key).to_arrays("gamma", order_by="layer"))
    x = torch.as_tensor(target.images[held])[:, None]
    assert cfg["stimulus_bn"] == "batch"
    # as in training: BatchNorm by the statistics of batches of stim_batch stimuli (the last one filled
    # up with the first images), features centred by the stored running mean (Eq. 9's f_bar)
    b = cfg["stim_batch"]
    order = torch.arange(len(held))
    feats = {k: [] for k in cfg["layers"]}
    with torch.no_grad(), train_classifier.batchnorm_batch_stats(net):
        for s in range(0, len(held), b):
            own = order[s:s + b]
            _, f = net(x[torch.cat([own, order[:b - len(own)]])], cfg["layers"])
            for k in cfg["layers"]:
                feats[k].append(f[k][:len(own)])
    feats = {k: torch.cat(v) for k, v in feats.items()}
    center = train_classifier.load_feature_mean((clf.RegularizedClassifier & key).fetch1("weights"))
    assert sorted(center) == cfg["layers"]
    loss = similarity_loss.similarity_loss(feats, torch.as_tensor(target.matrix[np.ix_(held, held)]), gamma.float(),
                                     center=center, clip=cfg["clip"])
    assert float(loss) == pytest.approx(row["heldout_loss"], rel=1e-4)


def test_dataset_and_config_rows(modules, study):
    clf = modules["classifier"]
    row = (clf.ClassificationDataset & study["dataset"]).fetch1()
    assert row["is_stand_in"] and "stand-in" in row["display_name"] and row["n_classes"] == 10
    assert clf.ClassificationDataset.add("offline") == study["dataset"]          # idempotent
    assert clf.ClassifierConfig.add("tiny") == study["config"]
    # only planned combinations are trained: a second config is not crossed with the plan
    other = clf.ClassifierConfig.add("tiny", epochs=1)
    assert not (clf.RegularizedClassifier.key_source & other)
    (clf.ClassifierConfig & other).delete(prompt=False)
    other = clf.ClassifierConfig.add("tiny", alpha=5.0)
    assert other != study["config"] and (clf.ClassifierConfig & other).fetch1("alpha") == 5.0
    with pytest.raises(ValueError, match="unknown classifier config keys"):
        clf.ClassifierConfig.add("tiny", alhpa=1.0)
    with pytest.raises(ValueError, match="scan group"):
        clf.Regularizer.add("neural-model", "no-such-group", model=study["model"])
    with pytest.raises(ValueError, match="takes no scan group"):
        clf.Regularizer.add("none", study["group"])
    (clf.ClassifierConfig & other).delete(prompt=False)


def test_store_checkpoint_is_replaced_and_removed(modules):
    """Saving again replaces the checkpoint (DataJoint's own put_buffer would keep the first one)."""
    clf = modules["classifier"]
    cp = clf.StoreCheckpoint(clf.RegularizedClassifier(), {"dataset": "x", "seed": 99})
    assert cp.load() is None
    cp.save(b"epoch 1")
    cp.save(b"epoch 2")
    assert cp.load() == b"epoch 2"
    cp.remove()
    assert cp.load() is None


def test_plan_command_is_idempotent_and_sweeps_alpha(modules, prefix, study):
    clf = modules["classifier"]
    before = set(map(lambda k: tuple(sorted(k.items())), clf.ClassifierPlan.keys()))
    assert cli.main(["--prefix", prefix, "plan", "tiny", "--group", study["group"]]) == 0    # what the fixture planned
    assert set(map(lambda k: tuple(sorted(k.items())), clf.ClassifierPlan.keys())) == before
    keys = plans.plan_study(prefix, "alpha-sweep", groups=[study["group"]], dataset="offline", classifier="tiny",
                            model="tiny")
    assert len(keys) == 3 + 5 * 3                       # None x 3 seeds + 5 alphas x Neural (model) x 3 seeds
    sweep = clf.ClassifierPlan & keys
    alphas = sorted(set((clf.ClassifierConfig & sweep.proj()).to_arrays("alpha")))
    assert alphas == [2.0, 4.0, 8.0, 16.0, 20.0, 32.0]  # 20: the base recipe, planned with 'none' only
    none = clf.Regularizer & {"kind": "none"}
    assert len(sweep & none.proj()) == 3 and set((clf.ClassifierConfig & (sweep & none.proj())).to_arrays("alpha")) == {20.0}
    # (DataJoint 2.3's cascading delete needs plain keys, not a restriction by a query)
    extra = (clf.ClassifierConfig & sweep.proj() & f"clf_hash != '{study['config']['clf_hash']}'").keys()
    (clf.ClassifierConfig & extra).delete(prompt=False)
    (clf.ClassifierPlan & [k for k in keys if k["seed"] > 0]).delete(prompt=False)
    assert set(map(lambda k: tuple(sorted(k.items())), clf.ClassifierPlan.keys())) == before
    with pytest.raises(ValueError, match="unknown study"):
        plans.plan_study(prefix, "nope")


def test_noise_robustness_and_report(modules, prefix, study, tmp_path):
    """NoiseRobustness equals compute.noise on the stored network; the report draws Figs. 1 and 4."""
    from neuralreg_schema import report
    from neuralreg_schema.compute import noise
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
    assert set(fig4["label"]) == {"None", "Neural (model)", "Neural (data)", "Shuffle"}
    assert fig4["display_name"].str.contains("stand-in").all()
    gamma = pd.read_csv(tmp_path / "table1_gamma.csv")
    assert np.allclose(gamma.filter(like="gamma_").sum(axis=1), 1.0)
    (ev.NoiseConfig & cfg_key).delete(prompt=False)


def test_attacks_and_minimal_perturbation(modules, prefix, study, tmp_path):
    """AttackResult per attack of the tiny suite on two classifiers; MinimalPerturbation is the
    per-sample minimum over them; the same samples for every model; Fig. 5 is drawn."""
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
    # robust accuracy at RobustBench's budgets, from the stored per-sample distances
    table = pd.read_csv(tmp_path / "classifiers.csv", keep_default_na=False)
    for key in keys:
        row = table.set_index(["clf_hash", "reg_hash", "seed"]).loc[(key["clf_hash"], key["reg_hash"], 0)]
        for norm, eps, column in (("linf", 8 / 255, "robust_acc_linf_8_255_tiny"), ("l2", 0.5, "robust_acc_l2_0.5_tiny")):
            d = np.asarray((ev.MinimalPerturbation.Norm & key & suite & {"norm": norm}).fetch1("distances"))
            assert float(row[column]) == pytest.approx(np.mean(d > eps))
        correct = np.asarray((ev.MinimalPerturbation & key & suite).fetch1("clean_correct"), bool)
        assert float(row["attacked_clean_acc_tiny"]) == pytest.approx(correct.mean())
    (ev.AttackSuite & suite).delete(prompt=False)


def test_notebook_queries_run(modules, prefix, study, monkeypatch):
    """notebooks/queries.ipynb runs top to bottom against these tables (its code cells, in order)."""
    import json
    from pathlib import Path
    import matplotlib
    matplotlib.use("Agg")
    monkeypatch.setenv("NEURALREG_PREFIX", prefix)
    nb = json.loads((Path(__file__).resolve().parents[2] / "notebooks" / "queries.ipynb").read_text())
    namespace = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "queries.ipynb", "exec"), namespace)
    assert len(namespace["table"]) == len(modules["classifier"].RegularizedClassifier())
    assert set(namespace["table"]["label"]) == {"None", "Neural (model)", "Neural (data)", "Shuffle"}


def test_plan_with_a_data_folder(modules, prefix, study, tmp_path, monkeypatch):
    """`plan --data-root`: an extracted CIFAR folder outside the cache is refused with the fix, before
    any data set row exists; with NEURALREG_DATA pointing at its parent the study is planned on it."""
    from tests.unit.test_datasets import make_cifar10_folder
    clf = modules["classifier"]
    folder, expected = make_cifar10_folder(tmp_path / "mine")
    monkeypatch.setenv("NEURALREG_DATA", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="NEURALREG_DATA"):
        plans.plan_study(prefix, "tiny", groups=[study["group"]], dataset="cifar10", data_root=str(tmp_path / "mine"))
    assert not (clf.ClassificationDataset & {"dataset": "cifar10"})
    monkeypatch.setenv("NEURALREG_DATA", str(tmp_path / "mine"))
    keys = plans.plan_study(prefix, "tiny", groups=[study["group"]], dataset="cifar10", data_root=str(tmp_path / "mine"))
    try:
        row = (clf.ClassificationDataset & {"dataset": "cifar10"}).fetch1()
        assert not row["is_stand_in"] and row["n_train"] == len(expected["train_labels"]) and row["n_classes"] == 10
        assert len(keys) == 4 and all(k["dataset"] == "cifar10" for k in keys)
        data = clf.ClassificationDataset.load({"dataset": "cifar10"})       # where a worker looks
        np.testing.assert_array_equal(data.test_labels, expected["test_labels"])
    finally:
        (clf.ClassificationDataset & {"dataset": "cifar10"}).delete(prompt=False)


def test_plan_paper_cifar100(modules, prefix, study, tmp_path, monkeypatch):
    """`neuralreg plan paper-cifar100` (Fig. 4B): ResNet34 (paper recipe, K = 5 uniformly located layers
    1/9/17/25/33, 64 stimuli per step) on grayscale CIFAR-100; None, Neural (model) and Shuffle x 5
    seeds; noise levels, no attack suite. A fixture CIFAR-100 folder stands in (nothing is downloaded)."""
    from tests.unit.test_datasets import make_cifar100_folder
    clf, ev = modules["classifier"], modules["evaluation"]
    make_cifar100_folder(tmp_path / "data")
    monkeypatch.setenv("NEURALREG_DATA", str(tmp_path / "data"))
    suites = len(ev.AttackSuite())
    # the tiny predictive model instead of the study's 'paper' one: no other test should train the latter
    keys = plans.plan_study(prefix, "paper-cifar100", groups=[study["group"]], model="tiny")
    try:
        assert len(keys) == 3 * 5 and {k["dataset"] for k in keys} == {"cifar100"}
        assert sorted({k["seed"] for k in keys}) == [0, 1, 2, 3, 4]
        plan = clf.ClassifierPlan & keys
        assert sorted((clf.Regularizer & plan.proj()).to_arrays("label")) == ["Neural (model)", "None", "Shuffle"]
        cfg_row = (clf.ClassifierConfig & plan.proj()).fetch1()
        cfg = cfg_row["config"]
        assert cfg_row["arch"] == "resnet34" and cfg_row["config_name"] == "paper-resnet34"
        assert cfg["layers"] == [1, 9, 17, 25, 33] and cfg["stim_batch"] == 64 and cfg["alpha"] == 20.0
        assert cfg == train_classifier.check_config({**train_classifier.default_config("paper"), "arch": "resnet34"})
        row = (clf.ClassificationDataset & {"dataset": "cifar100"}).fetch1()
        assert not row["is_stand_in"] and row["n_classes"] == 100
        assert len(ev.NoiseConfig & {"noise_name": "default"}) == 1
        assert len(ev.AttackSuite()) == suites                   # Fig. 4B is noise only
        assert plans.plan_study(prefix, "paper-cifar100", groups=[study["group"]], model="tiny") == keys   # idempotent
    finally:
        (clf.ClassificationDataset & {"dataset": "cifar100"}).delete(prompt=False)
        (clf.ClassifierConfig & {"config_name": "paper-resnet34"}).delete(prompt=False)
