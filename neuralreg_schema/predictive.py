"""Predictive schema: a CNN with Gaussian readout, shifter and modulator per scan (paper section 2.2).

`PredictiveModelConfig` holds content-addressed training configurations (the same config dict
always gives the same key; a config's name identifies it too), `PredictiveSeed` the seeds (rows, as
the classifier's `Seed`; the seed is no part of a config). `PredictiveModel` trains one network per
scan, config and seed (`model_key` picks one: {'model_hash', 'model_seed'}) with the three-part
make: the training runs in `make_compute`, outside any transaction, so a training of any length
never holds a database connection idle inside a transaction. The per-neuron
correlations (v_a of Eq. 6 and the oracle correlation) go to `PredictiveModel.Unit`; the model's
responses to every image of the scan under average behavior and centered eye position (what Eq. 6
uses) go to the object store with the weights.

After every epoch the training state goes to the object store (`checkpoints.StoreCheckpoint`); a job
that is killed and run again resumes after its last finished epoch, and the checkpoint is deleted
once the row is inserted. The numbers come from `compute/predictive/train.py`; this module only
fetches and inserts.
"""
from __future__ import annotations

import logging

import numpy as np

from . import settings
from .checkpoints import StoreCheckpoint
from .compute.common.serialization import jsonable
from .experiment import Scan, Trial, image_pixels, scan_responses
from .configs import derived_name, insert_named
from .hashing import config_hash
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.predictive")

schema = dj.Schema()

POPULATE_ORDER = ("PredictiveModel",)


@schema
class PredictiveModelConfig(dj.Lookup):
    definition = """
    # a complete training configuration of the predictive model, addressed by its content
    model_hash : char(32)                # md5 of the canonical JSON of `config`
    ---
    config_name : varchar(64)            # unique name, e.g. 'demo', 'paper', 'tiny-lr0.001' (configs.derived_name)
    config : json                        # every architecture and training setting, the seed excepted (see compute.predictive.train)
    unique index (config_name)
    """

    @classmethod
    def add(cls, config: dict | str = "demo", name: str | None = None, **overrides) -> dict:
        """Insert a configuration (a named recipe of train_predictive.CONFIGS, or a full dict, with
        overrides) and return its key; an identical configuration returns the existing key (under its
        first name). Without `name`, a recipe with overrides is named after both ('tiny-lr0.001'); a
        name that already names another configuration is refused (ValueError). The seed is no part
        of a configuration: it is a row of PredictiveSeed."""
        from .compute.predictive import train as train_predictive
        recipe = None
        if isinstance(config, str):
            recipe, config = config, train_predictive.default_config(config)
        config = {**config, **overrides}
        if "seed" in config or "model_seed" in config:
            raise ValueError("the predictive model's seed is not part of its config: it is a row of "
                             "PredictiveSeed (PredictiveSeed.add(1)), and a similarity config names the seed "
                             "it uses (SimilarityConfig.add(..., model_seed=1))")
        config = train_predictive.check_config(config)     # complete, validated
        key = {"model_hash": config_hash(config)}
        return insert_named(cls, key, {**key, "config_name": name or derived_name(recipe, overrides, key["model_hash"]),
                                       "config": config})


@schema
class PredictiveSeed(dj.Lookup):
    definition = """
    # a random seed of the predictive model (initialisation and batch order): every config trains once per seed and scan
    model_seed : int32                   # seed of torch and numpy in compute.predictive.train; not the classifier's seed
    """
    contents = [{"model_seed": 0}]       # the default seed, as before seeds were rows

    @classmethod
    def add(cls, *seeds: int) -> list[dict]:
        """Insert seeds (idempotent); each trains a model for every config and scan. Returns the keys."""
        rows = [{"model_seed": int(s)} for s in seeds]
        cls.insert(rows, skip_duplicates=True)
        return rows


def model_key(model: dict | str, model_seed: int | None = None) -> dict:
    """The key {'model_hash', 'model_seed'} that picks one trained predictive model of a scan.
    `model`: a PredictiveModelConfig key or hash, or a dict that also holds 'model_seed'; `model_seed`:
    the seed (default: the one in `model`, else 0). A seed given twice must agree."""
    model_hash = model["model_hash"] if isinstance(model, dict) else model
    stored = model.get("model_seed") if isinstance(model, dict) else None
    if model_seed is not None and stored is not None and int(model_seed) != int(stored):
        raise ValueError(f"model seed {model_seed} contradicts the model key's model_seed {stored}")
    seed = model_seed if model_seed is not None else stored
    return {"model_hash": model_hash, "model_seed": int(seed if seed is not None else 0)}


@schema
class PredictiveModel(dj.Computed):
    definition = """
    # a predictive model of one scan's neurons, trained on its train tier (early stopping on validation)
    -> Scan
    -> PredictiveModelConfig
    -> PredictiveSeed
    ---
    n_train_trials : int32               # trials trained on (tier 'train')
    n_validation_trials : int32          # trials used for early stopping (tier 'validation')
    n_oracle_trials : int32              # held-out trials of the oracle images: test and oracle correlation
    best_epoch : int32                   # epoch whose state was restored (1-based; 0: no epoch beat the initial state)
    epochs_run : int32                   # epochs trained before early stopping
    mean_validation_corr : float64       # mean over neurons of the validation correlation at the best state
    mean_test_corr : float64             # mean over neurons of v_a (single-trial correlation on oracle trials)
    mean_oracle_corr : float64           # mean over neurons of the correlation with the mean over repeats
    history : json                       # per epoch: epoch, train_loss, val_corr, lr, seconds
    weights : <hash@main>                # torch.save bytes of the best state (train_predictive.load_network)
    predictions : <npy@main>             # float32 (n_images, n_neurons): responses to each image under the scan's average behavior and mean eye position; rows follow image_ids, columns Scan.Unit.column
    image_ids : <blob>                   # int64 (n_images,): the scan's images, sorted
    n_parameters : int64                 # trainable parameters
    train_seconds : float64              # (s) wall time of the training and evaluation
    resumed_from_epoch : int32           # epochs restored from a checkpoint (0: trained in one run)
    """ + settings.PROVENANCE + """
    trained_at = CURRENT_TIMESTAMP : datetime   # when the row was inserted
    """
    reserve_timeout = 43200   # s a job may stay reserved before populate.jobs reclaims it (a paper-size model trains for hours on a CPU, minutes on a GPU)

    class Unit(dj.Part):
        definition = """
        # how well one neuron is predicted
        -> master
        -> Scan.Unit
        ---
        test_corr : float32              # v_a: Pearson r between prediction and single-trial response on the oracle trials (held out)
        oracle_corr : float32            # Pearson r between the prediction and the mean response over repeats, per oracle image
        validation_corr : float32        # Pearson r on the validation trials (used for early stopping)
        """

    @property
    def key_source(self):
        # test correlations need held-out oracle trials with responses
        return (Scan & "n_oracle_images >= 2").proj() * PredictiveModelConfig.proj() * PredictiveSeed.proj()

    # three-part make: fetch small identifiers, train outside any transaction, insert
    def make_fetch(self, key):
        data_hash = (Scan & key).fetch1("data_hash")
        return data_hash, (PredictiveModelConfig & key).fetch1("config_name")

    def make_compute(self, key, data_hash, config_name):
        from .compute.predictive import train as train_predictive
        config = dict((PredictiveModelConfig & key).fetch1("config"))
        seed = int(key["model_seed"])
        data, image_ids = load_scan_data(key)
        name = "{animal_id}-{session}-{scan_idx}".format(**key)

        def progress(message):
            log.info("PredictiveModel %s [%s]: %s", name, config_name, message)

        # a job killed mid-training resumes after its last finished epoch (checkpoints.StoreCheckpoint)
        result = train_predictive.train_predictive(data, config, seed=seed, progress=progress,
                                                   checkpoint=StoreCheckpoint(self, key))
        counts = {tier: int(np.sum(np.asarray(data.tiers) == tier)) for tier in ("train", "validation", "oracle")}
        return result, image_ids, counts

    def make_insert(self, key, result, image_ids, counts):
        columns = (Scan.Unit & key).to_arrays("unit_id", "column", order_by="column")
        self.insert1({
            **key, "n_train_trials": counts["train"],
            "n_validation_trials": counts["validation"], "n_oracle_trials": counts["oracle"],
            "best_epoch": int(result.best_epoch), "epochs_run": len(result.history),
            "mean_validation_corr": float(np.mean(result.val_corr)),
            "mean_test_corr": float(np.mean(result.test_corr)),
            "mean_oracle_corr": float(np.mean(result.oracle_corr)),
            "history": jsonable(result.history), "weights": result.state,
            "predictions": np.ascontiguousarray(result.predictions, dtype=np.float32),
            "image_ids": np.asarray(image_ids, dtype=np.int64), "n_parameters": int(result.n_parameters),
            "train_seconds": float(result.seconds), "resumed_from_epoch": int(result.resumed_from_epoch),
            **settings.provenance(result.device)})
        unit_ids, cols = columns
        self.Unit.insert([{**key, "unit_id": int(u), "test_corr": float(result.test_corr[c]),
                           "oracle_corr": float(result.oracle_corr[c]),
                           "validation_corr": float(result.val_corr[c])}
                          for u, c in zip(unit_ids, cols)])
        # the row is in (its transaction commits next); a lost checkpoint now only costs a re-run
        StoreCheckpoint(self, key).remove()

    def network(self, key=None, *, device="cpu"):
        """The trained network of one row, in eval mode on `device`: `(PredictiveModel & key).network()`
        (`key` restricts further). The same call as RegularizedClassifier's (networks.load_one)."""
        from .compute.predictive import train as train_predictive
        from .networks import load_one
        return load_one(self, train_predictive.load_network, key, device=device)


def load_scan_data(key: dict):
    """The scan's trials as a train_predictive.PredictiveData (images deduplicated, sorted by id).
    Returns (data, image_ids)."""
    from .compute.predictive import train as train_predictive
    trials = (Trial & key).to_dicts(order_by="trial_idx")
    rows = np.array([t["row"] for t in trials], dtype=np.int64)
    trial_ids = np.array([t["image_id"] for t in trials], dtype=np.int64)
    image_ids = np.unique(trial_ids)
    data = train_predictive.PredictiveData(
        images=image_pixels((Scan & key).fetch1("image_set"), image_ids), image_ids=image_ids,
        trial_image=np.searchsorted(image_ids, trial_ids),
        responses=scan_responses(key)[rows],
        behavior=np.array([[t["pupil"], t["dpupil"], t["running"]] for t in trials], dtype=np.float32),
        eye=np.array([[t["eye_x"], t["eye_y"]] for t in trials], dtype=np.float32),
        tiers=np.array([t["tier"] for t in trials]))
    return data, image_ids
