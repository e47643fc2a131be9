"""Predictive schema: a CNN with Gaussian readout, shifter and modulator per scan (paper section 2.2).

`PredictiveModelConfig` holds content-addressed training configurations (the same config dict
always gives the same key). `PredictiveModel` trains one network per scan and config with the
three-part make: the training runs in `make_compute`, outside any transaction, so a training of
any length never holds a database connection idle inside a transaction. The per-neuron
correlations (v_a of Eq. 6 and the oracle correlation) go to `PredictiveModel.Unit`; the model's
responses to every image of the scan under average behavior and centered eye position (what Eq. 6
uses) go to the object store with the weights.

The numbers come from `compute/train_predictive.py`; this module only fetches and inserts.
"""
from __future__ import annotations

import logging

import numpy as np

from . import settings
from .compute.serialization import jsonable
from .experiment import Scan, Trial, image_pixels, scan_responses
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
    config_name : varchar(64)            # label, e.g. 'demo', 'paper' or the base recipe of a variant
    config : json                        # every architecture and training setting, seed included (see compute.train_predictive)
    """

    @classmethod
    def add(cls, config: dict | str = "demo", name: str | None = None, **overrides) -> dict:
        """Insert a configuration (a named recipe of train_predictive.CONFIGS, or a full dict, with
        overrides) and return its key; an identical configuration returns the existing key."""
        from .compute import train_predictive
        if isinstance(config, str):
            name = name or config
            config = train_predictive.default_config(config)
        config = {**config, **overrides}
        seed = int(config.pop("seed", 0))
        config = {**train_predictive.check_config(config), "seed": seed}     # complete, validated
        key = {"model_hash": config_hash(config)}
        cls.insert1({**key, "config_name": (name or config.get("name") or "custom")[:64], "config": config},
                    skip_duplicates=True)
        return key


@schema
class PredictiveModel(dj.Computed):
    definition = """
    # a predictive model of one scan's neurons, trained on its train tier (early stopping on validation)
    -> Scan
    -> PredictiveModelConfig
    ---
    seed : int32                         # random seed of the initialisation and batch order (config['seed'])
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
    train_seconds : float64              # wall time of the training and evaluation (s)
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
        return (Scan & "n_oracle_images >= 2").proj() * PredictiveModelConfig.proj()

    # three-part make: fetch small identifiers, train outside any transaction, insert
    def make_fetch(self, key):
        data_hash = (Scan & key).fetch1("data_hash")
        return data_hash, (PredictiveModelConfig & key).fetch1("config_name")

    def make_compute(self, key, data_hash, config_name):
        from .compute import train_predictive
        config = dict((PredictiveModelConfig & key).fetch1("config"))
        seed = int(config.pop("seed", 0))
        data, image_ids = load_scan_data(key)
        name = "{animal_id}-{session}-{scan_idx}".format(**key)

        def progress(message):
            log.info("PredictiveModel %s [%s]: %s", name, config_name, message)

        result = train_predictive.train_predictive(data, config, seed=seed, progress=progress)
        counts = {tier: int(np.sum(np.asarray(data.tiers) == tier)) for tier in ("train", "validation", "oracle")}
        return result, image_ids, seed, counts

    def make_insert(self, key, result, image_ids, seed, counts):
        columns = (Scan.Unit & key).to_arrays("unit_id", "column", order_by="column")
        self.insert1({
            **key, "seed": seed, "n_train_trials": counts["train"],
            "n_validation_trials": counts["validation"], "n_oracle_trials": counts["oracle"],
            "best_epoch": int(result.best_epoch), "epochs_run": len(result.history),
            "mean_validation_corr": float(np.mean(result.val_corr)),
            "mean_test_corr": float(np.mean(result.test_corr)),
            "mean_oracle_corr": float(np.mean(result.oracle_corr)),
            "history": jsonable(result.history), "weights": result.state,
            "predictions": np.ascontiguousarray(result.predictions, dtype=np.float32),
            "image_ids": np.asarray(image_ids, dtype=np.int64), "n_parameters": int(result.n_parameters),
            "train_seconds": float(result.seconds), **settings.provenance(result.device)})
        unit_ids, cols = columns
        self.Unit.insert([{**key, "unit_id": int(u), "test_corr": float(result.test_corr[c]),
                           "oracle_corr": float(result.oracle_corr[c]),
                           "validation_corr": float(result.val_corr[c])}
                          for u, c in zip(unit_ids, cols)])

    def network(self, key=None):
        """The trained network of one row (restricted to a single key), in eval mode on the CPU."""
        from .compute import train_predictive
        rel = self & key if key is not None else self
        return train_predictive.load_network(rel.fetch1("weights"))


def load_scan_data(key: dict):
    """The scan's trials as a train_predictive.PredictiveData (images deduplicated, sorted by id).
    Returns (data, image_ids)."""
    from .compute import train_predictive
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
