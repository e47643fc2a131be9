"""AutoAttack in the report: per classifier (classifiers.csv columns) the robust accuracy at each
budget, the clean accuracy on AutoAttack's samples, and the cross-check against the stored minimal
perturbations; per regularizer (autoattack.csv) the robust accuracy over seeds.

Cross-check: for each classifier, norm and attack suite, the samples both evaluated (AutoAttack's
samples and the suite's are drawn by the same seeded permutation) that the classifier got right and
AutoAttack fooled at a budget eps although their minimal distance in that norm
(MinimalPerturbation.Norm, the minimum over the suite's attacks) is larger than eps: each one is an
adversarial the minimal-perturbation search missed (compute.evaluation.autoattack.missed_by_minimal).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .tables import CLASSIFIER_KEY, standard_error, classifier_table


def eps_label(norm: str, eps: float) -> str:
    """'8_255' for Linf 8/255, '0.5' for L2 0.5: the budget in a column name."""
    k = eps * 255
    if norm == "linf" and abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}_255"
    return f"{eps:g}"


def _rows(modules) -> list[dict]:
    """AutoAttackResult rows with their config and budgets; per classifier and norm the config with the
    most samples."""
    aa = modules.get("autoattack")
    if aa is None or not aa.AutoAttackResult().is_declared:
        return []
    rows = (aa.AutoAttackResult.proj("n_samples", "clean_accuracy", "sample_index", "clean_correct")
            * aa.AutoAttackConfig.proj("norm", "epsilons", cfg_samples="n_samples")).to_dicts()
    best = {}
    for r in rows:
        k = (*(r[c] for c in CLASSIFIER_KEY), r["norm"])
        if k not in best or r["n_samples"] > best[k]["n_samples"]:
            best[k] = r
    for r in best.values():
        parts = (aa.AutoAttackResult.Budget & {c: r[c] for c in CLASSIFIER_KEY + ["aa_hash"]}).to_dicts(
            order_by="eps_index")
        r["budgets"] = parts
    return list(best.values())


def autoattack_table(modules) -> pd.DataFrame:
    """Per classifier (CLASSIFIER_KEY): autoattack_clean_accuracy_<norm>, autoattack_robust_accuracy_<norm>_<eps>
    and, per attack suite with minimal distances for the classifier, autoattack_missed_<norm>_<suite> (the
    cross-check count) and autoattack_compared_<norm>_<suite> (the clean-correct samples both evaluated)."""
    from ..compute.evaluation.autoattack import fooled_at, missed_by_minimal
    rows = _rows(modules)
    if not rows:
        return pd.DataFrame()
    ev = modules["evaluation"]
    out = {}
    for r in rows:
        key = tuple(r[c] for c in CLASSIFIER_KEY)
        row = out.setdefault(key, dict(zip(CLASSIFIER_KEY, key)))
        norm = r["norm"]
        row[f"autoattack_clean_accuracy_{norm}"] = r["clean_accuracy"]
        for p in r["budgets"]:
            row[f"autoattack_robust_accuracy_{norm}_{eps_label(norm, p['epsilon'])}"] = p["robust_accuracy"]
        if not r["budgets"]:
            continue
        index = np.asarray(r["sample_index"], np.int64)
        correct = np.asarray(r["clean_correct"], bool)
        first = fooled_at(np.stack([np.asarray(p["robust"], bool) for p in r["budgets"]]), correct)
        eps = [p["epsilon"] for p in r["budgets"]]
        restriction = {**{c: r[c] for c in CLASSIFIER_KEY}, "norm": norm}
        for m in (ev.MinimalPerturbation.Norm & restriction).to_dicts():
            mp = (ev.MinimalPerturbation & m).fetch1()
            mp_index = np.asarray(mp["sample_index"], np.int64)
            common, ia, im = np.intersect1d(index, mp_index, return_indices=True)
            both = correct[ia] & np.asarray(mp["clean_correct"], bool)[im]
            minimal = np.asarray(m["distances"], np.float64)[im]
            row[f"autoattack_missed_{norm}_{m['suite']}"] = missed_by_minimal(first[ia], eps, minimal, both)
            row[f"autoattack_compared_{norm}_{m['suite']}"] = int(both.sum())
    return pd.DataFrame(list(out.values()))


def autoattack_summary(modules) -> pd.DataFrame:
    """autoattack.csv: per data set, recipe, regularizer, norm and budget the robust accuracy (mean and
    SEM over seeds), the clean accuracy on the same samples, and the samples attacked."""
    rows = []
    for r in _rows(modules):
        for p in r["budgets"]:
            rows.append({**{c: r[c] for c in CLASSIFIER_KEY}, "norm": r["norm"], "epsilon": p["epsilon"],
                         "robust_accuracy": p["robust_accuracy"], "aa_clean_accuracy": r["clean_accuracy"],
                         "n_samples": r["n_samples"]})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).merge(classifier_table(modules), on=CLASSIFIER_KEY)
    return (df.groupby(["display_name", "config_name", "label", "norm", "epsilon"], as_index=False)
            .agg(robust_accuracy_mean=("robust_accuracy", "mean"), robust_accuracy_sem=("robust_accuracy", standard_error),
                 autoattack_clean_accuracy_mean=("aa_clean_accuracy", "mean"), n_samples=("n_samples", "max"),
                 seeds=("seed", "nunique")))


__all__ = ["autoattack_summary", "autoattack_table", "eps_label"]
