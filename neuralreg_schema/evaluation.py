"""Evaluation schema: robustness of the trained classifiers (paper Sec. 4, Figs. 4, 5, 7).

    NoiseConfig            noise sds and the noise seed (one standard-normal image per test image)
    NoiseRobustness        test accuracy of a classifier at every noise level (+ .Level per sd)
    AttackSuite            a set of attacks on a fixed subset of test samples (the same for every model)
      .Member              one AttackConfig of the suite
    AttackConfig           one attack with its hyperparameter grid and repeats (compute/attacks.py)
    AttackResult           per classifier and attack: minimal adversarial distance per sample and norm
    MinimalPerturbation    per classifier and suite: the minimum over the suite's attacks (+ .Norm);
                           its median is the paper's robustness score

The numbers come from compute/noise.py and compute/attacks.py; this module fetches and inserts.
Every row records the device, torch version, code version and host that computed it.
"""
from __future__ import annotations

import logging

import numpy as np

from . import settings
from .classifier import ClassificationDataset, RegularizedClassifier
from .predictive import config_hash
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.evaluation")

schema = dj.Schema()

POPULATE_ORDER = ("NoiseRobustness", "AttackResult", "MinimalPerturbation")


def _device():
    from .compute.runtime import describe_device, resolve_device
    dev = resolve_device(None)
    return dev, describe_device(dev)


@schema
class NoiseConfig(dj.Lookup):
    definition = """
    # Gaussian noise levels of the Fig. 4 evaluation
    noise_name : varchar(32)             # e.g. 'default'
    ---
    sigmas : json                        # noise sds on [0, 1] images, ascending (0 = clean)
    noise_seed : int32                   # seed of the standard-normal noise images (identical for every model)
    max_samples = 0 : int32              # evaluate the first max_samples test images (0: all)
    """

    @classmethod
    def add(cls, name: str = "default", sigmas=None, *, noise_seed: int = 0, max_samples: int = 0) -> dict:
        """Insert a noise configuration (default sds: compute.noise.LEVELS[name] for a known name, else
        DEFAULT_SIGMAS); idempotent, and refuses other settings under an existing name."""
        from .compute import noise
        if sigmas is None:
            sigmas = noise.LEVELS.get(name, noise.DEFAULT_SIGMAS)
        row = {"noise_name": name, "sigmas": noise.check_sigmas(sigmas),
               "noise_seed": int(noise_seed), "max_samples": int(max_samples)}
        if row["max_samples"] < 0:
            raise ValueError("max_samples must be >= 0")
        key = {"noise_name": name}
        if cls & key:
            stored = (cls & key).fetch1()
            if [float(s) for s in stored["sigmas"]] != row["sigmas"] or stored["noise_seed"] != row["noise_seed"] \
                    or stored["max_samples"] != row["max_samples"]:
                raise ValueError(f"noise config {name!r} exists with other settings; choose another name")
            return key
        cls.insert1(row)
        return key


@schema
class NoiseRobustness(dj.Computed):
    definition = """
    # test accuracy of a classifier under additive Gaussian noise (Fig. 4)
    -> RegularizedClassifier
    -> NoiseConfig
    ---
    n_samples : int32                    # test images evaluated
    clean_accuracy : float64             # at sigma 0 (the first level when it is 0), else at the lowest level
    mean_accuracy : float64              # mean over the levels (area under the Fig. 4 curve / number of levels)
    seconds : float64
    """ + settings.PROVENANCE + """
    evaluated_at = CURRENT_TIMESTAMP : datetime
    """
    reserve_timeout = 7200   # s: 10000 test images x 9 levels of a ResNet18 take ~10 min on a CPU

    class Level(dj.Part):
        definition = """
        # accuracy at one noise level
        -> master
        level : int32                    # index into NoiseConfig.sigmas
        ---
        sigma : float64                  # noise sd on [0, 1] images
        accuracy : float64
        correct : <blob>                 # bool (n_samples,): per test image (paired comparisons between models)
        """

    def make(self, key):
        import time
        from .compute import noise
        t0 = time.perf_counter()
        cfg = (NoiseConfig & key).fetch1()
        data = ClassificationDataset.load(key)
        n = len(data.test_images) if not cfg["max_samples"] else min(cfg["max_samples"], len(data.test_images))
        dev, described = _device()
        net = RegularizedClassifier().network(key, device=dev)
        accuracy, correct = noise.noise_accuracy(net, data.test_images[:n], data.test_labels[:n], cfg["sigmas"],
                                                 seed=cfg["noise_seed"], device=dev)
        sigmas = [float(s) for s in cfg["sigmas"]]
        self.insert1({**key, "n_samples": n, "clean_accuracy": float(accuracy[0]),
                      "mean_accuracy": float(np.mean(accuracy)), "seconds": time.perf_counter() - t0,
                      **settings.provenance(described)})
        self.Level.insert([{**key, "level": i, "sigma": s, "accuracy": float(a), "correct": correct[i]}
                           for i, (s, a) in enumerate(zip(sigmas, accuracy))])


# ------------------------------------------------------------------ adversarial attacks

def _finite(x) -> float | None:
    """A float for the database (DOUBLE holds no infinity): None where x is inf or nan."""
    x = float(x)
    return x if np.isfinite(x) else None


def attack_samples(n_test: int, n_samples: int, seed: int) -> np.ndarray:
    """The test-set indices a suite attacks: the first n_samples of a seeded permutation, sorted.
    Only the test-set size and the seed decide them, so every model gets the same samples."""
    perm = np.random.default_rng(int(seed)).permutation(int(n_test))
    return np.sort(perm[:min(int(n_samples), int(n_test))]).astype(np.int64)


@schema
class AttackConfig(dj.Lookup):
    definition = """
    # one adversarial attack with its hyperparameter grid, addressed by its content
    attack_hash : char(32)               # md5 of the settings below
    ---
    attack : varchar(32)                 # compute.attacks.ATTACKS key, e.g. 'fmn-l2', 'pgd-linf', 'bb-l0'
    norm : enum('l0', 'l1', 'l2', 'linf')   # the attack's own norm (decides which adversarial is the best)
    kind : enum('min', 'eps')            # minimization attack, or fixed-epsilon attack with a batched binary search
    grid : json                          # hyperparameter grid (dict of lists); every setting x repeats runs
    repeats : int32                      # seeds per setting of a randomized attack
    batch_size : int32
    """

    @classmethod
    def add(cls, attack: str, grid=None, *, repeats: int = 1, batch_size: int = 128) -> dict:
        from .compute import attacks
        if attack not in attacks.ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; known: {', '.join(attacks.ATTACKS)}")
        spec = attacks.ATTACKS[attack]
        grid = dict(grid if grid is not None else spec.grid)
        for setting in attacks.expand_grid(grid):
            spec.params(setting)                                   # refuses unknown parameters
        settings_ = {"attack": attack, "norm": spec.norm, "kind": spec.kind, "grid": grid,
                     "repeats": int(repeats), "batch_size": int(batch_size)}
        key = {"attack_hash": config_hash(settings_)}
        cls.insert1({**key, **settings_}, skip_duplicates=True)
        return key


@schema
class AttackSuite(dj.Lookup):
    definition = """
    # a set of attacks run on the same test samples of every classifier
    suite : varchar(32)                  # e.g. 'paper', 'demo', 'tiny'
    ---
    n_samples : int32                    # test samples attacked (fewer if the test set is smaller)
    sample_seed : int32                  # seed of the sample choice (attack_samples)
    attack_seed : int32                  # seed of the randomized attacks
    note = '' : varchar(255)
    """

    class Member(dj.Part):
        definition = """
        # one attack of the suite
        -> master
        -> AttackConfig
        """

    @classmethod
    def add_recipe(cls, recipe: str = "demo", suite: str | None = None, *, sample_seed: int = 0,
                   attack_seed: int = 0) -> dict:
        """The suite of compute.attacks.RECIPES[recipe] (idempotent; refuses another suite's content
        under the same name)."""
        from .compute import attacks
        r = attacks.recipe(recipe)
        members = [AttackConfig.add(a, r["grids"][a], repeats=r["repeats"], batch_size=r["batch_size"])
                   for a in r["attacks"]]
        key = {"suite": suite or recipe}
        row = {**key, "n_samples": int(r["n_samples"]), "sample_seed": int(sample_seed),
               "attack_seed": int(attack_seed), "note": r.get("note", "")[:255]}
        if cls & key:
            stored = (cls & key).fetch1()
            hashes = set((cls.Member & key).to_arrays("attack_hash"))
            if {k: stored[k] for k in row} != row or hashes != {m["attack_hash"] for m in members}:
                raise ValueError(f"attack suite {key['suite']!r} exists with other settings; choose another name")
            return key
        with cls.connection.transaction:
            cls.insert1(row)
            cls.Member.insert([{**key, **m} for m in members])
        return key


@schema
class AttackResult(dj.Computed):
    definition = """
    # one attack on one classifier: the smallest adversarial per sample over the grid and repeats
    -> RegularizedClassifier
    -> AttackSuite.Member
    ---
    n_samples : int32
    clean_accuracy : float64             # on the attacked samples (misclassified ones count as distance 0)
    success_rate : float64               # fraction with a re-checked adversarial (or misclassified clean)
    rejected : int32                     # claimed adversarials that failed the re-check (not counted)
    median_own = null : float64          # median distance in the attack's own norm (null: infinite, most samples never fooled)
    median_l0 = null : float64           # median over samples of the best adversarial's L0 size (null: infinite)
    median_l1 = null : float64
    median_l2 = null : float64
    median_linf = null : float64
    mean_own_success = null : float64    # mean own-norm distance over the successful samples
    sample_index : <blob>                # int64 (n_samples,): indices into the test set
    distances : <npy@main>               # float64 (n_samples, 4): columns l0, l1, l2, linf; 0 = misclassified clean, inf = failed
    success : <blob>                     # bool (n_samples,)
    runs : json                          # per setting and repeat: params, seed, successes, rejected, seconds
    seconds : float64
    """ + settings.PROVENANCE + """
    evaluated_at = CURRENT_TIMESTAMP : datetime
    """
    reserve_timeout = 86400   # s: a paper-size grid on 1000 samples takes hours on a CPU

    def make_fetch(self, key):
        return (AttackConfig & key).fetch1("attack"), (AttackSuite & key).fetch1("n_samples")

    def make_compute(self, key, attack, n_samples):
        from .compute import attacks
        cfg = (AttackConfig & key).fetch1()
        suite = (AttackSuite & key).fetch1()
        data = ClassificationDataset.load(key)
        index = attack_samples(len(data.test_images), suite["n_samples"], suite["sample_seed"])
        dev, described = _device()
        net = RegularizedClassifier().network(key, device=dev)
        name = f"{key['dataset']}/seed{key['seed']}/{attack}"

        def progress(message):
            log.info("AttackResult %s: %s", name, message)

        images = data.test_images[index].astype(np.float32) / np.float32(255.0)
        outcome = attacks.run_attack(net, images, data.test_labels[index], attack, grid=cfg["grid"],
                                     repeats=cfg["repeats"], seed=suite["attack_seed"],
                                     batch_size=cfg["batch_size"], device=dev, progress=progress)
        return outcome, index, described

    def make_insert(self, key, outcome, index, described):
        from .compute import attacks
        dist = np.stack([np.asarray(outcome.distances[k], np.float64) for k in attacks.NORMS], axis=1)
        if np.isnan(dist).any():
            raise ValueError(f"attack {outcome.name}: NaN distances")
        own = dist[:, attacks.NORMS.index(outcome.norm)]
        success = np.asarray(outcome.success, bool)
        self.insert1({
            **key, "n_samples": len(index), "clean_accuracy": float(np.mean(outcome.clean_correct)),
            "success_rate": float(np.mean(success)), "rejected": int(outcome.rejected),
            "median_own": _finite(np.median(own)),
            **{f"median_{k}": _finite(np.median(dist[:, i])) for i, k in enumerate(attacks.NORMS)},
            "mean_own_success": _finite(own[success].mean()) if success.any() else None,
            "sample_index": np.asarray(index, np.int64), "distances": dist, "success": success,
            "runs": _jsonable(outcome.params_tried), "seconds": float(outcome.seconds), **settings.provenance(described)})


@schema
class MinimalPerturbation(dj.Computed):
    definition = """
    # per classifier and suite: the smallest adversarial distance per sample over all the suite's attacks
    -> RegularizedClassifier
    -> AttackSuite
    ---
    n_samples : int32
    n_attacks : int32                    # attacks whose results were combined
    sample_index : <blob>                # int64 (n_samples,): indices into the test set
    """

    class Norm(dj.Part):
        definition = """
        # the minimal perturbation in one norm (Figs. 5 and 7: its median is the robustness score)
        -> master
        norm : enum('l0', 'l1', 'l2', 'linf')
        ---
        median = null : float64          # median over samples (null: infinite, most samples never fooled)
        mean_success = null : float64    # mean over the samples some attack fooled
        success_rate : float64           # fraction of samples with a finite distance
        distances : <blob>               # float64 (n_samples,): min over attacks; 0 = misclassified clean, inf = never fooled
        """

    reserve_timeout = 600    # s: reads a few stored arrays

    @property
    def key_source(self):
        missing = (RegularizedClassifier.proj() * AttackSuite.Member.proj()) - AttackResult.proj()
        return (RegularizedClassifier.proj() * AttackSuite.proj()) - missing.proj()

    def make(self, key):
        from types import SimpleNamespace

        from .compute import attacks
        rows = (AttackResult & key).to_dicts(order_by="attack_hash")
        index = np.asarray(rows[0]["sample_index"])
        if any(not np.array_equal(np.asarray(r["sample_index"]), index) for r in rows):
            raise ValueError(f"attack results of suite {key['suite']!r} cover different samples")
        outcomes = []
        for r in rows:
            d = np.asarray(r["distances"].load() if hasattr(r["distances"], "load") else r["distances"], np.float64)
            outcomes.append(SimpleNamespace(name=r["attack_hash"], success=np.asarray(r["success"]),
                                            distances={k: d[:, i] for i, k in enumerate(attacks.NORMS)}))
        best = attacks.minimal_over_attacks(outcomes)
        self.insert1({**key, "n_samples": len(index), "n_attacks": len(rows), "sample_index": index})
        parts = []
        for norm in attacks.NORMS:
            d = best[norm]
            finite = np.isfinite(d)
            parts.append({**key, "norm": norm, "median": _finite(np.median(d)),
                          "mean_success": _finite(d[finite].mean()) if finite.any() else None,
                          "success_rate": float(finite.mean()), "distances": d})
        self.Norm.insert(parts)


def _jsonable(value):
    """Run records with numpy scalars/arrays turned into plain Python values, non-finite floats as strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value
