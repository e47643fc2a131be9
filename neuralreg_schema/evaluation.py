"""Evaluation schema: robustness of the trained classifiers (paper Sec. 4, Figs. 4, 5, 7).

    NoiseConfig            noise sds and the noise seed (one standard-normal image per test image)
    NoiseRobustness        test accuracy of a classifier at every noise level (+ .Level per sd)
    AttackSuite            a set of attacks on a fixed subset of test samples (the same for every model)
      .Member              one AttackConfig of the suite
    AttackConfig           one attack with its hyperparameter grid and repeats (compute/evaluation/specs.py)
    AttackResult           per classifier and attack: minimal adversarial distance per sample and norm
      .Budget              the same when every run may use at most `budget` iterations (Fig. 5's curve)
      .Queries             per run: the model queries it made (forward and gradient rows, counted at the model)
    MinimalPerturbation    per classifier and suite: the minimum over the suite's attacks (+ .Norm);
                           its median (Fig. 5) and mean (supplement Fig. 7) are the paper's robustness
                           scores, each also without the clean errors
      .Budget              per norm and query budget: the minimum over attacks limited to that budget

Schemas declared before the sparse attacks and the budget curve (issue 14) lack columns and parts:
drop their MinimalPerturbation and AttackResult tables (in that order) and populate them again.
AttackResult.Queries (issue 22) is new: AttackResult rows computed before it have no query counts
(the report then draws Fig. 5 against iterations); a new study (a new prefix) has them.

The numbers come from compute/evaluation/: noise.py and attacks.py (with specs.py, recipes.py and
scores.py beside it); this module fetches and inserts. NoiseRobustness
and AttackResult compute in make_compute, with no transaction open (three-part make); an AttackResult
job saves its progress after finished batches in the object store (checkpoints.StoreCheckpoint, beside
the classifiers' training checkpoints), resumes from it when it is run again after a crash, and removes
it with the insert. Every row records the device, torch version, code version and host that computed it.
"""
from __future__ import annotations

import logging

import numpy as np

from . import settings
from .checkpoints import StoreCheckpoint
from .classifier import ClassificationDataset, RegularizedClassifier
from .compute.common.serialization import jsonable as _jsonable
from .hashing import config_hash
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.evaluation")

schema = dj.Schema()

POPULATE_ORDER = ("NoiseRobustness", "AttackResult", "MinimalPerturbation")
ATTACK_CHECKPOINT_INTERVAL = 60.0   # s: an AttackResult job saves its progress at most this often


def evaluation_device():
    from .compute.common.runtime import describe_device, resolve_device
    dev = resolve_device(None)
    return dev, describe_device(dev)


@schema
class NoiseConfig(dj.Lookup):
    definition = """
    # Gaussian noise levels of the Fig. 4 evaluation
    noise_name : varchar(32)             # e.g. 'default'
    ---
    sigmas : json                        # (pixels in [0, 1]) noise sds, ascending (0 = clean)
    noise_seed : int32                   # seed of the standard-normal noise images (identical for every model)
    max_samples = 0 : int32              # evaluate the first max_samples test images (0: all)
    """

    @classmethod
    def add(cls, name: str = "default", sigmas=None, *, noise_seed: int = 0, max_samples: int = 0) -> dict:
        """Insert a noise configuration (default sds: compute.evaluation.noise.LEVELS[name] for a known name, else
        DEFAULT_SIGMAS); idempotent, and refuses other settings under an existing name."""
        from .compute.evaluation import noise
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
    clean_accuracy : float64             # (fraction correct) at sigma 0 (the first level when it is 0), else at the lowest level
    mean_accuracy : float64              # (fraction correct) mean over the levels (area under the Fig. 4 curve / number of levels)
    seconds : float64                    # (s) wall time of the evaluation (make_compute)
    """ + settings.PROVENANCE + """
    evaluated_at = CURRENT_TIMESTAMP : datetime   # when the row was inserted
    """
    reserve_timeout = 7200   # s: 10000 test images x 9 levels of a ResNet18 take ~10 min on a CPU

    class Level(dj.Part):
        definition = """
        # accuracy at one noise level
        -> master
        level : int32                    # index into NoiseConfig.sigmas
        ---
        sigma : float64                  # (pixels in [0, 1]) noise sd added to the images
        accuracy : float64               # (fraction correct) test accuracy at this sd
        correct : <blob>                 # bool (n_samples,): per test image (paired comparisons between models)
        """

    def make_fetch(self, key):
        cfg = (NoiseConfig & key).fetch1()
        return ((ClassificationDataset & key).fetch1("content_md5"), [float(s) for s in cfg["sigmas"]],
                int(cfg["noise_seed"]), int(cfg["max_samples"]))

    def make_compute(self, key, content_md5, sigmas, noise_seed, max_samples):
        import time
        from .compute.evaluation import noise
        t0 = time.perf_counter()
        data = ClassificationDataset.load(key)
        n = len(data.test_images) if not max_samples else min(max_samples, len(data.test_images))
        dev, described = evaluation_device()
        net = RegularizedClassifier().network(key, device=dev)
        accuracy, correct = noise.noise_accuracy(net, data.test_images[:n], data.test_labels[:n], sigmas,
                                                 seed=noise_seed, device=dev)
        return n, sigmas, accuracy, correct, time.perf_counter() - t0, described

    def make_insert(self, key, n, sigmas, accuracy, correct, seconds, described):
        self.insert1({**key, "n_samples": n, "clean_accuracy": float(accuracy[0]),
                      "mean_accuracy": float(np.mean(accuracy)), "seconds": float(seconds),
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
    attack : varchar(32)                 # compute.evaluation.specs.ATTACKS key, e.g. 'fmn-l2', 'pgd-linf', 'bb-l0'
    norm : enum('l0', 'l1', 'l2', 'linf')   # the attack's own norm (decides which adversarial is the best)
    kind : enum('min', 'eps')            # minimization attack, or fixed-epsilon attack with a batched binary search
    grid : json                          # hyperparameter grid (dict of lists); every setting x repeats runs
    repeats : int32                      # seeds per setting of a randomized attack
    batch_size : int32                   # (samples) attacked at once
    """

    @classmethod
    def add(cls, attack: str, grid=None, *, repeats: int = 1, batch_size: int = 128) -> dict:
        """Insert one attack with its grid (None: the attack's default grid); idempotent. The grid is
        stored as given (JSON) after compute.evaluation.specs.parse_grid, the parser AttackResult runs it
        through, accepted it: an unknown attack or option, or a value of the wrong type, is refused
        here (AttackConfigError, a ValueError)."""
        from .compute.evaluation.specs import parse_grid
        spec, _ = parse_grid(attack, grid)
        grid = dict(grid if grid is not None else spec.grid)
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
    note = '' : varchar(255)             # what the suite is for (the recipe's note)
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
        """The suite of compute.evaluation.recipes.RECIPES[recipe] (idempotent; refuses another suite's
        content under the same name)."""
        from .compute.evaluation.recipes import recipe as named_recipe
        r = named_recipe(recipe)
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
        with settings.transaction(cls.connection):      # joins a plan's transaction
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
    n_samples : int32                    # test samples attacked
    clean_accuracy : float64             # (fraction correct) on the attacked samples (misclassified ones count as distance 0)
    success_rate : float64               # (fraction of samples) with a re-checked adversarial (or misclassified clean)
    rejected : int32                     # claimed adversarials that failed the re-check (not counted)
    median_own = null : float64          # (own norm, pixels in [0, 1]) median distance in the attack's own norm (null: infinite, most samples never fooled)
    median_l0 = null : float64           # (pixels changed) median over samples of the best adversarial's L0 size (null: infinite)
    median_l1 = null : float64           # (pixels in [0, 1]) as median_l0, L1: sum of absolute pixel changes
    median_l2 = null : float64           # (pixels in [0, 1]) as median_l0, L2: Euclidean norm of the change
    median_linf = null : float64         # (pixels in [0, 1]) as median_l0, Linf: largest absolute pixel change
    mean_own = null : float64            # (own norm) mean own-norm distance over all samples, clean errors 0 (null: infinite, a sample never fooled)
    sem_own = null : float64             # (own norm) its standard error over samples, std(ddof=1)/sqrt(n) (null: infinite or n < 2)
    mean_own_success = null : float64    # (own norm) mean own-norm distance over the successful samples (null: none)
    sample_index : <blob>                # int64 (n_samples,): indices into the test set
    clean_correct : <blob>               # bool (n_samples,): classified correctly without attack
    distances : <npy@main>               # float64 (n_samples, 4): columns l0, l1, l2, linf; 0 = misclassified clean, inf = failed
    success : <blob>                     # bool (n_samples,)
    runs : json                          # per setting and repeat: params, seed, successes, rejected, iterations (summed over samples), seconds
    seconds : float64                    # (s) wall time of the whole attack (summed over resumed runs)
    """ + settings.PROVENANCE + """
    evaluated_at = CURRENT_TIMESTAMP : datetime   # when the row was inserted
    """
    reserve_timeout = 86400   # s: a paper-size grid on 1000 samples takes hours on a CPU

    class Budget(dj.Part):
        definition = """
        # the attack limited to `budget` iterations per run: per sample the adversarial kept among the runs that used at most that many (Fig. 5's curve)
        -> master
        budget : int32                   # iterations per run (the query budget): the grid's steps values and 1, 2, 5, 10, 20, ...
        ---
        success_rate : float64           # (fraction of samples) with an adversarial within the budget (or misclassified clean)
        median_own = null : float64      # (own norm) median own-norm distance over all samples (null: infinite)
        distances : <blob>               # float64 (n_samples, 4): l0, l1, l2, linf; 0 = misclassified clean, inf = none within the budget
        """

    class Queries(dj.Part):
        definition = """
        # model queries of one run (setting x repeat), counted at the model (compute/evaluation/queries.py)
        -> master
        run : int32                      # index into `runs` (run order)
        ---
        steps : int32                    # (iterations) the run's nominal iterations (its query budget)
        early_stopping : bool            # True: each sample stops at its adversarial (JSMA, SparseFool)
        attacked : int32                 # (samples) attacked: the clean-correct ones
        forward_rows : int64             # (images) rows of every forward pass of the run
        gradient_rows : int64            # (images) rows of every gradient that reached the input
        queries_per_sample : float64     # (queries) (forward_rows + gradient_rows) / attacked
        used : <blob>                    # int64 (attacked,): iterations each attacked sample used
        """

    def make_fetch(self, key):
        return (AttackConfig & key).fetch1("attack"), (AttackSuite & key).fetch1("n_samples")

    def make_compute(self, key, attack, n_samples):
        from .compute.evaluation import attacks
        cfg = (AttackConfig & key).fetch1()
        suite = (AttackSuite & key).fetch1()
        data = ClassificationDataset.load(key)
        index = attack_samples(len(data.test_images), suite["n_samples"], suite["sample_seed"])
        dev, described = evaluation_device()
        net = RegularizedClassifier().network(key, device=dev)
        name = f"{key['dataset']}/seed{key['seed']}/{attack}"

        def progress(message):
            log.info("AttackResult %s: %s", name, message)

        images = data.test_images[index].astype(np.float32) / np.float32(255.0)
        # progress is saved after finished batches (at most every ATTACK_CHECKPOINT_INTERVAL s) beside
        # the classifiers' training checkpoints; a reclaimed job resumes from it with the same result
        outcome = attacks.run_attack(net, images, data.test_labels[index], attack, grid=cfg["grid"],
                                     repeats=cfg["repeats"], seed=suite["attack_seed"],
                                     batch_size=cfg["batch_size"], device=dev, progress=progress,
                                     checkpoint=StoreCheckpoint(self, key),
                                     checkpoint_interval=ATTACK_CHECKPOINT_INTERVAL)
        return outcome, index, described

    def make_insert(self, key, outcome, index, described):
        from .compute.evaluation.scores import NORMS, distance_statistics
        dist = np.stack([np.asarray(outcome.distances[k], np.float64) for k in NORMS], axis=1)
        if np.isnan(dist).any():
            raise ValueError(f"attack {outcome.name}: NaN distances")
        k_own = NORMS.index(outcome.norm)
        own = dist[:, k_own]
        success = np.asarray(outcome.success, bool)
        clean_correct = np.asarray(outcome.clean_correct, bool)
        stats = distance_statistics(own, clean_correct)
        per_budget = np.asarray(outcome.budget_distances, np.float64)
        if np.isnan(per_budget).any() or per_budget.shape != (len(outcome.budgets),) + dist.shape:
            raise ValueError(f"attack {outcome.name}: budget distances of shape {per_budget.shape} or NaN")
        self.insert1({
            **key, "n_samples": len(index), "clean_accuracy": float(np.mean(clean_correct)),
            "success_rate": float(np.mean(success)), "rejected": int(outcome.rejected),
            "median_own": _finite(np.median(own)),
            **{f"median_{k}": _finite(np.median(dist[:, i])) for i, k in enumerate(NORMS)},
            "mean_own": _finite(stats["mean"]), "sem_own": _finite(stats["sem"]),
            "mean_own_success": _finite(own[success].mean()) if success.any() else None,
            "sample_index": np.asarray(index, np.int64), "clean_correct": clean_correct, "distances": dist,
            "success": success, "runs": _jsonable(outcome.params_tried), "seconds": float(outcome.seconds),
            **settings.provenance(described)})
        self.Budget.insert([{**key, "budget": int(b), "success_rate": float(np.isfinite(d[:, k_own]).mean()),
                             "median_own": _finite(np.median(d[:, k_own])), "distances": d}
                            for b, d in zip(outcome.budgets, per_budget)])
        self.Queries.insert(query_rows(key, outcome))
        # the rows are in (the transaction commits next); a lost checkpoint now only costs a re-run
        StoreCheckpoint(self, key).remove()


def query_rows(key: dict, outcome) -> list[dict]:
    """AttackResult.Queries rows of an attack outcome: per run its nominal steps, the model rows it
    sent forward and back (compute/evaluation/queries.py) and the iterations of each attacked sample."""
    from .compute.evaluation.specs import ATTACKS, SPARSE_FAMILIES
    early = issubclass(ATTACKS[outcome.name].family, SPARSE_FAMILIES)
    attacked = np.asarray(outcome.clean_correct, bool)
    rows = []
    for r, run in enumerate(outcome.params_tried):
        n = int(run["attacked"])
        forward, gradient = int(run["forward_rows"]), int(run["gradient_rows"])
        rows.append({**key, "run": r, "steps": int(run["steps"]), "early_stopping": early, "attacked": n,
                     "forward_rows": forward, "gradient_rows": gradient,
                     "queries_per_sample": (forward + gradient) / n if n else 0.0,
                     "used": np.asarray(outcome.runs_used[r], np.int64)[attacked]})
    return rows


@schema
class MinimalPerturbation(dj.Computed):
    definition = """
    # per classifier and suite: the smallest adversarial distance per sample over all the suite's attacks
    -> RegularizedClassifier
    -> AttackSuite
    ---
    n_samples : int32                    # test samples attacked
    n_correct : int32                    # of them, classified correctly without attack
    n_attacks : int32                    # attacks whose results were combined
    sample_index : <blob>                # int64 (n_samples,): indices into the test set
    clean_correct : <blob>               # bool (n_samples,): classified correctly without attack
    """

    class Norm(dj.Part):
        definition = """
        # the minimal perturbation in one norm (Fig. 5: its median; supplement Fig. 7: its mean); distances on [0, 1] images
        -> master
        norm : enum('l0', 'l1', 'l2', 'linf')   # L0: pixels changed; L1, L2, Linf: norms of the change
        ---
        median = null : float64          # (the norm's unit) median over all samples, clean errors 0 (null: infinite, most samples never fooled)
        mean = null : float64            # (the norm's unit) mean over all samples, clean errors 0 (null: infinite, some sample never fooled)
        sem = null : float64             # (the norm's unit) its standard error over samples, std(ddof=1)/sqrt(n) (null: infinite or n < 2)
        median_correct = null : float64  # (the norm's unit) median over the clean-correct samples only (null: infinite or none)
        mean_correct = null : float64    # (the norm's unit) mean over the clean-correct samples only (null: infinite or none)
        sem_correct = null : float64     # (the norm's unit) its standard error over those samples (null: infinite or fewer than 2)
        mean_success = null : float64    # (the norm's unit) mean over the samples some attack fooled
        success_rate : float64           # (fraction of samples) with a finite distance
        distances : <blob>               # float64 (n_samples,): min over attacks; 0 = misclassified clean, inf = never fooled
        """

    class Budget(dj.Part):
        definition = """
        # the minimal perturbation when every attack may use at most `budget` iterations per run (Fig. 5's curve)
        -> master
        norm : enum('l0', 'l1', 'l2', 'linf')   # as in Norm
        budget : int32                   # iterations per run of every attack (the union of the attacks' budgets)
        ---
        median = null : float64          # (the norm's unit) over all samples, clean errors 0 (null: infinite)
        mean = null : float64            # (the norm's unit) over all samples, clean errors 0 (null: infinite)
        sem = null : float64             # (the norm's unit) standard error of the mean over samples (null: infinite or n < 2)
        median_correct = null : float64  # (the norm's unit) over the clean-correct samples (null: infinite or none)
        mean_correct = null : float64    # (the norm's unit) over the clean-correct samples (null: infinite or none)
        success_rate : float64           # (fraction of samples) fooled within the budget (or misclassified clean)
        distances : <blob>               # float64 (n_samples,): min over attacks within the budget; inf = none
        """

    class Member(dj.Part):
        definition = """
        # the attack results combined: deleting or recomputing one deletes this
        # (delete(part_integrity="cascade")), so no minimum outlives the attacks it was taken over
        -> master
        -> AttackResult
        """

    reserve_timeout = 600    # s: reads a few stored arrays

    @property
    def key_source(self):
        missing = (RegularizedClassifier.proj() * AttackSuite.Member.proj()) - AttackResult.proj()
        return (RegularizedClassifier.proj() * AttackSuite.proj()) - missing.proj()

    def make(self, key):
        from types import SimpleNamespace

        from .compute.evaluation.scores import NORMS, budget_curve, distance_statistics, minimal_over_attacks
        rows = (AttackResult & key).to_dicts(order_by="attack_hash")
        index = np.asarray(rows[0]["sample_index"])
        if any(not np.array_equal(np.asarray(r["sample_index"]), index) for r in rows):
            raise ValueError(f"attack results of suite {key['suite']!r} cover different samples")
        outcomes = []
        for r in rows:
            d = np.asarray(r["distances"].load() if hasattr(r["distances"], "load") else r["distances"], np.float64)
            outcomes.append(SimpleNamespace(name=r["attack_hash"], success=np.asarray(r["success"]),
                                            distances={k: d[:, i] for i, k in enumerate(NORMS)}))
        best = minimal_over_attacks(outcomes)
        correct = np.asarray(rows[0]["clean_correct"], bool)
        if any(not np.array_equal(np.asarray(r["clean_correct"], bool), correct) for r in rows):
            raise ValueError(f"attack results of suite {key['suite']!r} disagree on the clean errors")
        curves = []
        for r in rows:
            parts = (AttackResult.Budget & key & {"attack_hash": r["attack_hash"]}).to_dicts(order_by="budget")
            curves.append(([p["budget"] for p in parts],
                           np.stack([np.asarray(p["distances"], np.float64) for p in parts]) if parts
                           else np.zeros((0, len(index), len(NORMS)))))
        budgets, curve = budget_curve(curves)
        self.insert1({**key, "n_samples": len(index), "n_correct": int(correct.sum()), "n_attacks": len(rows),
                      "sample_index": index, "clean_correct": correct})
        norm_rows, budget_rows = [], []
        for i, norm in enumerate(NORMS):
            d = best[norm]
            finite = np.isfinite(d)
            st = distance_statistics(d, correct)
            norm_rows.append({**key, "norm": norm, **{k: _finite(st[k]) for k in STATISTICS},
                              "mean_success": _finite(d[finite].mean()) if finite.any() else None,
                              "success_rate": float(finite.mean()), "distances": d})
            for b, db in zip(budgets, curve):
                st = distance_statistics(db[:, i], correct)
                budget_rows.append({**key, "norm": norm, "budget": int(b),
                                    **{k: _finite(st[k]) for k in STATISTICS if k != "sem_correct"},
                                    "success_rate": st["success_rate"], "distances": db[:, i].copy()})
        self.Norm.insert(norm_rows)
        self.Budget.insert(budget_rows)
        self.Member.insert((AttackResult & key).keys())


STATISTICS = ("median", "mean", "sem", "median_correct", "mean_correct", "sem_correct")
