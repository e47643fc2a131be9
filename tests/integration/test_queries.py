"""The named tidy queries (neuralreg_schema/queries.py) and joins of computed tables (issue 26): every
pair of computed tables that share a key, and every pair linked through a part table (a matrix and its
predictive model, a classifier and its target), joins with `queries.join` the way the README shows,
although their provenance attributes (device, code_version, ...) share names; each named query returns
its documented columns on a plain index. The README's blocks run them on a tiny demo
(tests/integration/test_readme.py)."""
import itertools

import pandas as pd
import pytest

from neuralreg_schema import queries
from populate import worker


def _computed(modules):
    return [t() for t in worker.computed_tables(modules)]


def test_the_plain_join_of_two_computed_tables_is_refused_and_join_is_not(modules):
    ev, clf = modules["evaluation"], modules["classifier"]
    with pytest.raises(Exception, match="lineage"):            # what a newcomer meets first
        ev.NoiseRobustness * clf.RegularizedClassifier
    joined = queries.join(ev.NoiseRobustness, clf.RegularizedClassifier)
    assert {"device", "regularized_classifier_device", "test_accuracy", "mean_accuracy"} <= set(joined.heading.names)
    joined.proj("mean_accuracy", "test_accuracy").to_pandas()
    (ev.NoiseRobustness * clf.RegularizedClassifier.proj("test_accuracy", clf_device="device")).to_pandas()


def test_every_pair_of_related_computed_tables_joins(modules):
    tables = _computed(modules)
    pairs = [(a, b) for a, b in itertools.permutations(tables, 2) if set(b.primary_key) <= set(a.primary_key)]
    sim, pred, clf = modules["similarity"], modules["predictive"], modules["classifier"]
    # through the part table that links them (its key only: a part may repeat its master's names)
    linked = [(sim.SimilarityMatrix() * sim.SimilarityMatrix.Source.proj(), pred.PredictiveModel()),
              (sim.AveragedSimilarity() * sim.AveragedSimilarity.Member.proj(), sim.SimilarityMatrix()),
              (sim.SimilarityStability() * sim.SimilarityStability.Member.proj(), pred.PredictiveModel()),
              (clf.RegularizedClassifier() * clf.RegularizedClassifier.Target.proj(), sim.AveragedSimilarity())]
    names = {(type(a).__name__, type(b).__name__) for a, b in pairs}
    for needed in (("PredictiveModel", "Neuron"), ("NoiseRobustness", "RegularizedClassifier"),
                   ("AttackResult", "RegularizedClassifier"), ("MinimalPerturbation", "RegularizedClassifier"),
                   ("SimilarityMatrix", "Neuron")):
        assert needed in names, needed
    for a, b in pairs + linked:
        joined = queries.join(a, b)
        shared = set(a.heading.secondary_attributes) & set(b.heading.secondary_attributes)
        stem = b.table_name.lstrip("_#~")
        assert {f"{stem}_{n}" for n in shared} <= set(joined.heading.names), (a, b)
        assert set(a.primary_key) | set(b.primary_key) <= set(joined.heading.names)
        joined.proj().to_pandas()                               # the query runs


@pytest.mark.parametrize("name, columns", [
    ("classifiers", queries.CLASSIFIER_COLUMNS), ("noise_curves", queries.NOISE_COLUMNS),
    ("minimal_perturbations", queries.PERTURBATION_COLUMNS), ("layer_weights", queries.LAYER_COLUMNS),
    ("predictive_models", queries.PREDICTIVE_COLUMNS), ("similarity_checks", queries.CHECK_COLUMNS),
    ("autoattack", queries.AUTOATTACK_COLUMNS), ("corruptions", queries.CORRUPTION_COLUMNS)])
def test_each_named_query_returns_its_columns_on_a_plain_index(modules, name, columns):
    df = getattr(queries, name)(modules)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == columns
    assert isinstance(df.index, pd.RangeIndex)
