"""One way to load a trained network, for both stages that train one: `(PredictiveModel & key).network()`
and `(RegularizedClassifier & key).network()`, each `network(key=None, *, device="cpu")`, in eval mode
(`key` restricts further; the older `RegularizedClassifier().network(key)` is the same call)."""
from __future__ import annotations


def load_one(rel, loader, key=None, *, device="cpu"):
    """The network in the `weights` of the one row of `rel` (restricted by `key` when given), rebuilt by
    `loader(weights, device=device)`; ValueError naming the count when the restriction selects no row or
    several (a network is loaded from exactly one)."""
    if key is not None:
        rel = rel & key
    n = len(rel)
    if n != 1:
        name = rel.table_name if hasattr(rel, "table_name") else type(rel).__name__
        raise ValueError(f"network() loads the network of one row, but the restriction selects {n} rows of "
                         f"{name}: restrict it to one key, e.g. (Table & key).network() with a key from "
                         "(Table & ...).keys()")
    return loader(rel.fetch1("weights"), device=device)


__all__ = ["load_one"]
