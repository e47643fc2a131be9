"""One way to load a trained network (issue 26): PredictiveModel and RegularizedClassifier have the same
`network(key=None, *, device="cpu")`, both through networks.load_one, which loads exactly one row's
weights and refuses a restriction that selects none or several, naming the count."""
import inspect

import pytest

from neuralreg_schema import networks


def test_both_stages_load_their_network_with_the_same_call():
    from neuralreg_schema.classifier import RegularizedClassifier
    from neuralreg_schema.predictive import PredictiveModel
    signatures = {inspect.signature(t.network) for t in (PredictiveModel, RegularizedClassifier)}
    assert len(signatures) == 1, signatures
    (signature,) = signatures
    assert list(signature.parameters) == ["self", "key", "device"]
    assert signature.parameters["key"].default is None and signature.parameters["device"].default == "cpu"
    assert signature.parameters["device"].kind is inspect.Parameter.KEYWORD_ONLY
    for table in (PredictiveModel, RegularizedClassifier):
        assert "load_one" in inspect.getsource(table.network), table


class Rows:
    """A stand-in for a DataJoint relation: rows of {'id', 'weights'}, restricted by a dict."""

    table_name = "toy"

    def __init__(self, rows):
        self.rows = rows

    def __and__(self, key):
        return Rows([r for r in self.rows if all(r[k] == v for k, v in key.items())])

    def __len__(self):
        return len(self.rows)

    def fetch1(self, attribute):
        assert len(self.rows) == 1
        return self.rows[0][attribute]


def test_load_one_loads_exactly_one_row():
    rel = Rows([{"id": 1, "weights": b"one"}, {"id": 2, "weights": b"two"}])
    loaded = []

    def loader(weights, device):
        loaded.append((weights, device))
        return weights

    assert networks.load_one(rel & {"id": 2}, loader) == b"two"
    assert networks.load_one(rel, loader, {"id": 1}, device="cuda:1") == b"one"
    assert loaded == [(b"two", "cpu"), (b"one", "cuda:1")]
    for restricted, n in ((rel, 2), (rel & {"id": 3}, 0)):
        with pytest.raises(ValueError, match=f"selects {n} rows of toy"):
            networks.load_one(restricted, loader)
    assert len(loaded) == 2
