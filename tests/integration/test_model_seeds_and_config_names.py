"""The predictive model's seed is a row (PredictiveSeed) and part of a trained model's key; a
similarity config names the seed it uses; a configuration's name identifies it (one name, one
configuration). Everything this module adds is deleted at the end."""
import numpy as np
import pytest

from neuralreg_schema.compute.similarity import rsa
from tests.helpers import make_recording

ANIMAL = 431
GROUP = "toy_seeds"


@pytest.fixture(scope="module")
def toy(modules):
    """One small hand-made scan with its Eq. 1 weights, a two-epoch predictive config and seed 1."""
    exp, pred, sim = modules["experiment"], modules["predictive"], modules["similarity"]
    images, scan = make_recording(animal_id=ANIMAL, image_set="toy_seeds", n_single=30, seed=3)
    exp.ingest(images, [scan])
    key = {"animal_id": ANIMAL, "session": 1, "scan_idx": 1}
    exp.Neuron.populate(key)
    sim.ScanGroup.add(GROUP, [key])
    config = pred.PredictiveModelConfig.add("tiny", name="seeds-tiny", max_epochs=2)
    added = pred.PredictiveSeed.add(1)
    yield {"key": key, "config": config}
    (sim.ScanGroup & {"scan_group": GROUP}).delete(prompt=False, part_integrity="cascade")
    (exp.Scan & key).delete(prompt=False, part_integrity="cascade")
    (pred.PredictiveSeed & added).delete(prompt=False, part_integrity="cascade")
    (pred.PredictiveModelConfig & config).delete(prompt=False, part_integrity="cascade")


def _model(modules, key, model):
    """(predictions by image id, w_a, v_a) of one trained predictive model of the scan `key`."""
    exp, pred = modules["experiment"], modules["predictive"]
    row = (pred.PredictiveModel & key & model).fetch1()
    w = (exp.Neuron.Unit * exp.Scan.Unit & key).to_arrays("snr_weight", order_by="column")
    v = (pred.PredictiveModel.Unit * exp.Scan.Unit & key & model).to_arrays("test_corr", order_by="column")
    return dict(zip(row["image_ids"].tolist(), np.asarray(row["predictions"].load()))), w, v


def test_every_seed_trains_its_own_model(modules, toy):
    pred = modules["predictive"]
    key, config = toy["key"], toy["config"]
    assert {0, 1} <= set(pred.PredictiveSeed.to_arrays("model_seed"))       # seed 0 is a row from the start
    seeds = pred.PredictiveSeed & "model_seed in (0, 1)"
    assert len(pred.PredictiveModel().key_source & key & config & seeds) == 2
    result = pred.PredictiveModel.populate(key, config, seeds, reserve_jobs=True, suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    assert sorted(int(s) for s in (pred.PredictiveModel & key & config).to_arrays("model_seed")) == [0, 1]
    p0, _, _ = _model(modules, key, {**config, "model_seed": 0})
    p1, _, _ = _model(modules, key, {**config, "model_seed": 1})
    assert set(p0) == set(p1)
    assert not np.allclose(np.stack(list(p0.values())), np.stack(list(p1.values())))     # other initialisation
    assert "seed" not in (pred.PredictiveModelConfig & config).fetch1("config")


def test_a_similarity_config_names_its_model_seed(modules, toy, tmp_path):
    pred, sim = modules["predictive"], modules["similarity"]
    key, config = toy["key"], toy["config"]
    pred.PredictiveModel.populate(key, config, pred.PredictiveSeed & "model_seed in (0, 1)", reserve_jobs=True)
    m0 = sim.SimilarityConfig.add("model", "oracle", model=config)             # no seed given: seed 0
    m1 = sim.SimilarityConfig.add("model", "oracle", model={**config, "model_seed": 1})
    assert m0 != m1
    assert sim.SimilarityConfig.add("model", "oracle", model=config, model_seed=0) == m0
    assert (sim.SimilarityConfig & m0).fetch1("model_seed") == 0
    assert (sim.SimilarityConfig & m1).fetch1("model_seed") == 1
    existed = bool(sim.SimilarityConfig & "method = 'data'")
    data = sim.SimilarityConfig.add("data", "stimulus")
    assert (sim.SimilarityConfig & data).fetch1("model_seed") is None
    if not existed:
        (sim.SimilarityConfig & data).delete(prompt=False)
    with pytest.raises(ValueError, match="contradicts"):
        sim.SimilarityConfig.add("model", "oracle", model={**config, "model_seed": 1}, model_seed=2)
    with pytest.raises(ValueError, match="model seed"):
        sim.SimilarityConfig.add("data", "stimulus", model_seed=1)
    result = sim.SimilarityMatrix.populate(key, [m0, m1], reserve_jobs=True, suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    matrices = {}
    for cfg, seed in ((m0, 0), (m1, 1)):
        source = (sim.SimilarityMatrix.Source & key & cfg).fetch1()
        assert (source["model_hash"], source["model_seed"]) == (config["model_hash"], seed)
        row = (sim.SimilarityMatrix & key & cfg).fetch1()
        predictions, w, v = _model(modules, key, {**config, "model_seed": seed})
        ids = np.asarray(row["image_ids"])
        expected = rsa.model_similarity(np.stack([predictions[int(i)] for i in ids]), w, v)
        matrices[seed] = np.asarray(row["matrix"].load())
        np.testing.assert_allclose(matrices[seed], expected, atol=1e-5)
    assert not np.allclose(matrices[0], matrices[1])
    # the Fig. 1 checks: one row per trained model (config and seed) of the group
    group = {"scan_group": GROUP}
    result = sim.SimilarityStability.populate(group, config, reserve_jobs=True, suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    stability = sim.SimilarityStability & group & config
    assert sorted(int(s) for s in stability.to_arrays("model_seed")) == [0, 1]
    assert len(sim.SimilarityStability.Member & group & config) == 2
    # the report draws Fig. 1 once per model of the group, not one picture over the other
    from neuralreg_schema import report
    pictures = sorted(p.name for p in report.figure1(modules, tmp_path) if p.name.startswith("fig1_similarity_toy-seeds"))
    assert pictures == [f"fig1_similarity_toy-seeds-{config['model_hash'][:8]}-seed{s}.png" for s in (0, 1)]
    # deleting seed 1's model takes its matrix and its checks, not seed 0's
    (pred.PredictiveModel & key & config & {"model_seed": 1}).delete(prompt=False, part_integrity="cascade")
    assert not (sim.SimilarityMatrix & key & m1) and (sim.SimilarityMatrix & key & m0)
    assert sorted(int(s) for s in stability.to_arrays("model_seed")) == [0]


def test_the_seed_is_not_part_of_a_predictive_config(modules):
    pred = modules["predictive"]
    for bad in ({"seed": 1}, {"model_seed": 1}):
        with pytest.raises(ValueError, match="PredictiveSeed"):
            pred.PredictiveModelConfig.add("tiny", **bad)


@pytest.mark.parametrize("module,table,recipe,base,override,derived_name", [
    ("predictive", "PredictiveModelConfig", "tiny", {"patience": 7}, {"max_epochs": 3}, "tiny-max_epochs3-patience7"),
    ("classifier", "ClassifierConfig", "tiny", {"width": 5}, {"epochs": 3}, "tiny-epochs3-width5"),
])
def test_a_config_name_identifies_one_config(modules, module, table, recipe, base, override, derived_name):
    """`base` makes the first config one no other test module adds."""
    cls = getattr(modules[module], table)
    first = cls.add(recipe, name="names-a", **base)
    try:
        assert cls.add(recipe, name="names-a", **base) == first              # idempotent
        assert cls.add(recipe, **base) == first                              # same content: its first name stays
        assert (cls & first).fetch1("config_name") == "names-a"
        with pytest.raises(ValueError, match="'names-a' already names another configuration"):
            cls.add(recipe, name="names-a", **base, **override)
        derived = cls.add(recipe, **base, **override)                       # overrides: a derived name, never the recipe's
        assert (cls & derived).fetch1("config_name") == derived_name
        config = dict((cls & first).fetch1("config"))
        (name, value), = override.items()
        custom = cls.add({**config, name: value + 1})
        assert (cls & custom).fetch1("config_name") == "custom-" + list(custom.values())[0][:8]
        # the database refuses a second row under a taken name too (unique index), whatever the client
        row = {**(cls & custom).fetch1(), "config_name": "names-a"}
        row[list(custom)[0]] = "0" * 32
        with pytest.raises(Exception):
            cls.insert1(row)
        assert not (cls & {list(custom)[0]: "0" * 32})
        (cls & [derived, custom]).delete(prompt=False)
    finally:
        (cls & first).delete(prompt=False)


def test_plans_name_the_model_seed(modules, prefix, toy):
    """`neuralreg plan-similarity --model-seed 1`: the model and shuffle configs use seed 1's model."""
    from neuralreg_schema import cli
    pred, sim = modules["predictive"], modules["similarity"]
    existed = bool(pred.PredictiveModelConfig & {"config_name": "tiny"})
    assert cli.main(["--prefix", prefix, "plan-similarity", "--model", "tiny", "--model-seed", "1", "--no-vgg"]) == 0
    tiny = (pred.PredictiveModelConfig & {"config_name": "tiny"}).keys()[0]
    try:
        by_model = sim.SimilarityConfig & tiny & "method in ('model', 'shuffle')"
        assert len(by_model) == 3                                  # model/stimulus, model/oracle, shuffle/stimulus
        assert set(by_model.to_arrays("model_seed")) == {1}
    finally:
        (sim.SimilarityConfig & tiny & {"model_seed": 1}).delete(prompt=False)
        if not existed:
            (pred.PredictiveModelConfig & tiny).delete(prompt=False, part_integrity="cascade")
