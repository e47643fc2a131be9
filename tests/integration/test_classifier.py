"""RegularizedClassifier on the tiny simulated study and the offline stand-in data set: the target is
held back until its AveragedSimilarity exists; every regularizer trains; rows, history and layer
weights agree with the stored network and the target matrix. The study is planned and trained by the
fixtures of tests/integration/conftest.py; its evaluation is tested in test_evaluation.py."""
import numpy as np
import pytest
import torch

from neuralreg_schema import cli
from neuralreg_schema.compute.classifier import network as clf_network, recipes, similarity_loss, train as train_classifier
from populate import plans


def test_targets_hold_regularized_jobs_back(modules, classifier_targets):
    """A planned classifier waits for its target: regularizers towards a scan group of their own (the
    study's scans under a second name) are not ready until that group's AveragedSimilarity exists."""
    clf, sim = modules["classifier"], modules["similarity"]
    study = classifier_targets
    group = sim.ScanGroup.add(study["group"] + "-held", study["scans"].keys())
    try:
        regs = clf.Regularizer.add_standard(group["scan_group"], study["model"])
        clf.ClassifierPlan.add(study["dataset"], study["config"], list(regs.values()), [0])
        mine = clf.Regularizer & list(regs.values())
        ready = clf.RegularizedClassifier.key_source & study["config"] & mine.proj()
        assert set((clf.Regularizer & ready.proj()).to_arrays("kind")) == {"none"}        # no averaged matrix yet
        result = sim.AveragedSimilarity.populate(group, reserve_jobs=True, suppress_errors=True)
        assert not result["error_list"], result["error_list"]
        ready = clf.RegularizedClassifier.key_source & study["config"] & mine.proj()
        assert set((clf.Regularizer & ready.proj()).to_arrays("kind")) == {"none", "neural-model", "neural-data",
                                                                           "shuffle"}
    finally:
        # (the 'none' regularizer and its plan are the study's own; the group's cascade to the others)
        (sim.ScanGroup & group).delete(prompt=False)


def test_every_regularizer_trains(modules, trained_classifiers):
    study = trained_classifiers
    clf = modules["classifier"]
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
        net = (clf.RegularizedClassifier & key).network()           # as PredictiveModel's (networks.load_one)
        x = torch.as_tensor(data.test_images)[:, None].float() / 255
        acc = clf_network.accuracy(net, x, torch.as_tensor(data.test_labels))
        assert acc == pytest.approx(row["test_accuracy"]) == pytest.approx(history[-1]["test_accuracy"])


def test_heldout_loss_matches_the_target(modules, trained_classifiers):
    """The stored held-out loss is Eq. 8 between the stored network's features and the averaged matrix."""
    study = trained_classifiers
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
    center = clf_network.load_feature_mean((clf.RegularizedClassifier & key).fetch1("weights"))
    assert sorted(center) == cfg["layers"]
    loss = similarity_loss.similarity_loss(feats, torch.as_tensor(target.matrix[np.ix_(held, held)]), gamma.float(),
                                     center=center, clip=cfg["clip"])
    assert float(loss) == pytest.approx(row["heldout_loss"], rel=1e-4)


def test_dataset_and_config_rows(modules, classifier_study):
    study = classifier_study
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


def test_plan_command_is_idempotent_and_sweeps_alpha(modules, prefix, classifier_study):
    study = classifier_study
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


def test_plan_with_a_data_folder(modules, prefix, classifier_study, tmp_path, monkeypatch):
    """`plan --data-root`: an extracted CIFAR folder outside the cache is refused with the fix, before
    any data set row exists; with NEURALREG_DATA pointing at its parent the study is planned on it."""
    study = classifier_study
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


def test_plan_paper_cifar100(modules, prefix, classifier_study, tmp_path, monkeypatch):
    """`neuralreg plan paper-cifar100` (Fig. 4B): ResNet34 (paper recipe, K = 5 uniformly located layers
    1/9/17/25/33, 64 stimuli per step) on grayscale CIFAR-100; None, Neural (model) and Shuffle x 5
    seeds; noise levels, no attack suite. A fixture CIFAR-100 folder stands in (nothing is downloaded)."""
    study = classifier_study
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
        assert cfg == recipes.check_config({**recipes.default_config("paper"), "arch": "resnet34"})
        row = (clf.ClassificationDataset & {"dataset": "cifar100"}).fetch1()
        assert not row["is_stand_in"] and row["n_classes"] == 100
        assert len(ev.NoiseConfig & {"noise_name": "default"}) == 1
        assert len(ev.AttackSuite()) == suites                   # Fig. 4B is noise only
        assert plans.plan_study(prefix, "paper-cifar100", groups=[study["group"]], model="tiny") == keys   # idempotent
    finally:
        (clf.ClassificationDataset & {"dataset": "cifar100"}).delete(prompt=False)
        (clf.ClassifierConfig & {"config_name": "paper-resnet34"}).delete(prompt=False)
