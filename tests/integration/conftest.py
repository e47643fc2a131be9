"""Fixtures of the classifier branch of the DAG, shared by test_classifier.py and test_evaluation.py
(module scope: each module plans, trains and deletes its own copy, so neither depends on the other
having run). Each stage is a fixture of its own, so a test asks for exactly the state it reads:
`classifier_study` (ingested and planned, nothing populated), `classifier_targets` (the upstream
tables populated: the regularizers' targets exist), `trained_classifiers` (every planned classifier
trained)."""
import pytest

from neuralreg_schema import cli
from neuralreg_schema.compute.experiment import simulate

CLASSIFIER_SEED = 11   # simulated experiment of the classifier study (other modules use other seeds)


@pytest.fixture(scope="module")
def classifier_study(modules, prefix):
    """The tiny simulated experiment (seed CLASSIFIER_SEED) ingested through the CLI and the four
    standard regularizers planned on the offline data set with the 'tiny' recipe, seed 0. Everything
    the study adds to the session's prefix is deleted at the end of the module."""
    exp, pred, sim, clf = (modules[m] for m in ("experiment", "predictive", "similarity", "classifier"))
    assert cli.main(["--prefix", prefix, "ingest", "simulated", "--profile", "tiny",
                     "--seed", str(CLASSIFIER_SEED)]) == 0
    experiment = simulate.simulate_experiment("tiny", seed=CLASSIFIER_SEED)
    group = experiment.image_set.name
    model = pred.PredictiveModelConfig.add("tiny")
    dataset = clf.ClassificationDataset.add("offline")
    config = clf.ClassifierConfig.add("tiny")
    regs = clf.Regularizer.add_standard(group, model)
    clf.ClassifierPlan.add(dataset, config, list(regs.values()), [0])
    yield {"experiment": experiment, "group": group, "model": model, "dataset": dataset, "config": config,
           "regs": regs, "scans": exp.Scan & (sim.ScanGroup.Member & {"scan_group": group})}
    clf.ClassifierPlan.delete(prompt=False)
    clf.Regularizer.delete(prompt=False)
    clf.ClassifierConfig.delete(prompt=False)
    clf.Seed.delete(prompt=False)
    sim.SimilarityConfig.delete(prompt=False)
    pred.PredictiveModelConfig.delete(prompt=False)
    (sim.ScanGroup & {"scan_group": group}).delete(prompt=False)


@pytest.fixture(scope="module")
def classifier_targets(modules, classifier_study):
    """The study with Neuron, PredictiveModel, SimilarityMatrix and AveragedSimilarity populated for
    its scans and group only (other modules leave deliberately failing keys in the shared prefix)."""
    exp, pred, sim = modules["experiment"], modules["predictive"], modules["similarity"]
    scans = classifier_study["scans"]
    exp.Neuron.populate(scans)
    for table, restriction in ((pred.PredictiveModel, scans), (sim.SimilarityMatrix, scans),
                               (sim.AveragedSimilarity, {"scan_group": classifier_study["group"]})):
        result = table.populate(restriction, reserve_jobs=True, suppress_errors=True)
        assert not result["error_list"], result["error_list"]
    return classifier_study


@pytest.fixture(scope="module")
def trained_classifiers(modules, classifier_targets):
    """The study with every planned RegularizedClassifier trained."""
    clf = modules["classifier"]
    result = clf.RegularizedClassifier.populate(classifier_targets["config"], reserve_jobs=True,
                                                suppress_errors=True)
    assert not result["error_list"], result["error_list"]
    return classifier_targets


@pytest.fixture(scope="session")
def tiny_demo(modules, tmp_path_factory):
    """`neuralreg demo --profile tiny` run in a subprocess into a prefix of its own (on the session's
    server and store, which `modules` set up), as a user runs it; the prefix is yielded and every
    schema under it dropped at the end of the session. Used, read-only, by the README and notebook
    tests (tests/integration/test_readme.py, test_notebook.py): one demo serves both."""
    from neuralreg_schema import pipeline
    from tests.helpers import cli, new_prefix
    prefix = new_prefix("demo")
    try:
        demo = cli(prefix, "demo", "--profile", "tiny", "--out", str(tmp_path_factory.mktemp("demo_out")),
                   timeout=900)
        assert demo.returncode == 0, (demo.stdout[-3000:], demo.stderr[-3000:])
        yield prefix
    finally:
        pipeline.drop_all(prefix)
