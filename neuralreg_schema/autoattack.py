"""AutoAttack tables, declared in the evaluation schema (`evaluation.schema`; pipeline.activate binds
this module with it, after evaluation.py's tables):

    AutoAttackConfig    norm, ascending budgets, AutoAttack version, test samples and seeds (content-addressed)
    AutoAttackResult    per classifier and config: clean accuracy on the samples, and (.Budget) the
                        robust accuracy at each budget with the per-sample robust flags

The numbers come from compute/evaluation/autoattack.py (pyautoattack, the reference implementation;
docs/robustness.md). The samples are `evaluation.attack_samples(n_test, n_samples, sample_seed)`, the
same seeded choice the attack suites make, so with the same seed a suite's samples are among them and
the report can compare AutoAttack with the stored minimal perturbations sample by sample (the
cross-check: report/autoattack.py). A job saves its progress in the object store after finished
chunks (checkpoints.StoreCheckpoint), resumes from it after a crash, and removes it with the insert.
"""
from __future__ import annotations

import logging

import numpy as np

from . import settings
from .checkpoints import StoreCheckpoint
from .classifier import ClassificationDataset, RegularizedClassifier
from .evaluation import ATTACK_CHECKPOINT_INTERVAL, evaluation_device, attack_samples, schema
from .hashing import config_hash
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.autoattack")

POPULATE_ORDER = ("AutoAttackResult",)


@schema
class AutoAttackConfig(dj.Lookup):
    definition = """
    # AutoAttack (Croce & Hein 2020) at ascending budgets of one norm on a fixed subset of test samples
    aa_hash : char(32)                   # md5 of the settings below
    ---
    norm : enum('linf', 'l2')            # threat model
    epsilons : json                      # (norm units, pixels in [0, 1]) budgets, ascending
    version : varchar(16)                # AutoAttack version: 'standard' (APGD-CE, APGD-T, FAB-T, Square)
    n_samples : int32                    # test samples attacked (fewer if the test set is smaller)
    sample_seed : int32                  # seed of the sample choice (evaluation.attack_samples, as the suites)
    attack_seed : int32                  # seed of AutoAttack's random starts
    batch_size : int32                   # (samples) per AutoAttack call (and per checkpoint)
    recipe = '' : varchar(32)            # the compute.evaluation.autoattack.RECIPES name it came from, if any
    """

    @classmethod
    def add(cls, norm: str, epsilons=None, *, version: str = "standard", n_samples: int = 1000,
            sample_seed: int = 0, attack_seed: int = 0, batch_size: int = 250, recipe: str = "") -> dict:
        """Insert one configuration (default budgets: EPSILONS[norm]); idempotent. Bad settings are
        refused (ValueError) before anything is written."""
        from .compute.evaluation import autoattack
        eps = autoattack.check_settings(norm, autoattack.EPSILONS.get(norm, ()) if epsilons is None else epsilons,
                                        version)
        if int(n_samples) < 1 or int(batch_size) < 1:
            raise ValueError("n_samples and batch_size must be >= 1")
        settings_ = {"norm": norm, "epsilons": eps, "version": version, "n_samples": int(n_samples),
                     "sample_seed": int(sample_seed), "attack_seed": int(attack_seed), "batch_size": int(batch_size)}
        key = {"aa_hash": config_hash(settings_)}
        cls.insert1({**key, **settings_, "recipe": recipe[:32]}, skip_duplicates=True)
        return key

    @classmethod
    def add_recipe(cls, name: str = "demo", *, sample_seed: int = 0, attack_seed: int = 0) -> list[dict]:
        """Both norms at the standard budgets with the samples of compute.evaluation.autoattack.RECIPES[name]."""
        from .compute.evaluation import autoattack
        r = autoattack.recipe(name)
        return [cls.add(norm, n_samples=r["n_samples"], batch_size=r["batch_size"], sample_seed=sample_seed,
                        attack_seed=attack_seed, recipe=name) for norm in autoattack.NORMS]


@schema
class AutoAttackResult(dj.Computed):
    definition = """
    # AutoAttack on one classifier at every budget of one config (nested budgets: docs/robustness.md)
    -> RegularizedClassifier
    -> AutoAttackConfig
    ---
    n_samples : int32                    # test samples attacked
    clean_accuracy : float64             # (fraction correct) on those samples
    rejected : int32                     # claimed adversarials that failed the re-check (counted robust)
    sample_index : <blob>                # int64 (n_samples,): indices into the test set
    clean_correct : <blob>               # bool (n_samples,): classified correctly without attack
    distance : <blob>                    # float64 (n_samples,): own-norm size of the adversarial found (0: clean error, inf: none)
    seconds : float64                    # (s) wall time (summed over resumed runs)
    """ + settings.PROVENANCE + """
    evaluated_at = CURRENT_TIMESTAMP : datetime   # when the row was inserted
    """
    reserve_timeout = 86400   # s: 1000 samples x 7 budgets of a ResNet18 take hours on a CPU

    class Budget(dj.Part):
        definition = """
        # robust accuracy at one budget
        -> master
        eps_index : int32                # index into AutoAttackConfig.epsilons
        ---
        epsilon : float64                # (norm units, pixels in [0, 1]) the budget
        robust_accuracy : float64        # (fraction of samples) not fooled within it (clean errors are not robust)
        attacked : int32                 # samples AutoAttack ran on (the others: clean errors, or fooled at a smaller budget)
        robust : <blob>                  # bool (n_samples,): per sample
        """

    def make_fetch(self, key):
        return ((ClassificationDataset & key).fetch1("content_md5"), (AutoAttackConfig & key).fetch1("aa_hash"))

    def make_compute(self, key, content_md5, aa_hash):
        from .compute.evaluation import autoattack
        cfg = (AutoAttackConfig & key).fetch1()
        data = ClassificationDataset.load(key)
        index = attack_samples(len(data.test_images), cfg["n_samples"], cfg["sample_seed"])
        dev, described = evaluation_device()
        net = RegularizedClassifier().network(key, device=dev)
        name = f"{key['dataset']}/seed{key['seed']}/autoattack-{cfg['norm']}"
        images = data.test_images[index].astype(np.float32) / np.float32(255.0)
        outcome = autoattack.run_autoattack(
            net, images, data.test_labels[index], cfg["norm"], cfg["epsilons"], version=cfg["version"],
            seed=cfg["attack_seed"], batch_size=cfg["batch_size"], device=dev,
            progress=lambda message: log.info("AutoAttackResult %s: %s", name, message),
            checkpoint=StoreCheckpoint(self, key), checkpoint_interval=ATTACK_CHECKPOINT_INTERVAL)
        return outcome, index, described

    def make_insert(self, key, outcome, index, described):
        robust = np.asarray(outcome.robust, bool)
        if robust.shape != (len(outcome.epsilons), len(index)):
            raise ValueError(f"AutoAttack returned robust flags of shape {robust.shape}")
        self.insert1({**key, "n_samples": len(index), "clean_accuracy": float(np.mean(outcome.clean_correct)),
                      "rejected": int(outcome.rejected), "sample_index": np.asarray(index, np.int64),
                      "clean_correct": np.asarray(outcome.clean_correct, bool),
                      "distance": np.asarray(outcome.distance, np.float64), "seconds": float(outcome.seconds),
                      **settings.provenance(described)})
        self.Budget.insert([{**key, "eps_index": i, "epsilon": float(e), "robust_accuracy": float(robust[i].mean()),
                             "attacked": int(outcome.attacked[i]), "robust": robust[i]}
                            for i, e in enumerate(outcome.epsilons)])
        StoreCheckpoint(self, key).remove()


__all__ = ["AutoAttackConfig", "AutoAttackResult", "POPULATE_ORDER"]
