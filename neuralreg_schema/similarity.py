"""Similarity schema: the representational similarity matrices of the paper and their checks.

    ScanGroup (+ .Member)    scans whose matrices are averaged (same image set), e.g. the 8 scans of the paper
    SimilarityConfig         how a matrix is made: method x image subset (+ predictive model config and
                             model seed, shuffle seed, layer)
    SimilarityMatrix         one matrix per scan and config (float32, object store, with its image ids)
    AveragedSimilarity       the mean over a ScanGroup's scans: the regularization target of a classifier
    SimilarityStability      Eqs. 4-5 and the Fig. 1D correlations for a group and a predictive model

Methods (compute/similarity/rsa.py holds the equations):
    data     Eq. 2 on single-trial responses scaled by w_a (Eq. 1)            subset 'stimulus'
    oracle   Eq. 3: Eq. 2 between all repeats of two oracle images, averaged    subset 'oracle'
    model    Eq. 6: Eq. 2 on the predictive model's responses scaled by w_a v_a  both subsets
             (one trained model: the config's PredictiveModelConfig and PredictiveSeed, both columns)
    shuffle  the model matrix with its images relabelled by a seeded permutation  both subsets
    vgg      Eq. 2 on VGG19 conv3_1 features of the images (ImageNet weights)     both subsets
    lowpass  Eq. 2 on the Gaussian-blurred pixels (blur_sigma px): a known-answer     both subsets
             control, a representation white noise barely moves (compute/similarity/pixel_targets.py)
    highpass Eq. 2 on the pixels minus their blur (the fine detail noise corrupts)  both subsets

Image subsets: 'stimulus' = the images shown in the train and validation tiers (the paper's 5000
non-oracle images: the regularization target); 'oracle' = the repeated test images (Fig. 1).
Every matrix of a scan and subset covers the same sorted image ids, so methods compare cell by cell.
"""
from __future__ import annotations

import logging

import numpy as np

from .compute.similarity import rsa
from .experiment import ImageSet, Neuron, OracleTrial, Scan, Trial, image_pixels, scan_responses
from .hashing import config_hash
from .predictive import PredictiveModel, PredictiveModelConfig, PredictiveSeed, model_key
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.similarity")

schema = dj.Schema()

POPULATE_ORDER = ("SimilarityMatrix", "AveragedSimilarity", "SimilarityStability")

METHODS = ("data", "oracle", "model", "shuffle", "vgg", "lowpass", "highpass")
PIXEL_METHODS = ("lowpass", "highpass")      # computed from the stimulus pixels alone (controls)
WEIGHTED_METHODS = ("data", "oracle", "model", "shuffle")   # computed with the Eq. 1 weights (Neuron)
SUBSETS = ("stimulus", "oracle")
_VALID = {("data", "stimulus"), ("oracle", "oracle"), ("model", "stimulus"), ("model", "oracle"),
          ("shuffle", "stimulus"), ("shuffle", "oracle"), ("vgg", "stimulus"), ("vgg", "oracle"),
          ("lowpass", "stimulus"), ("lowpass", "oracle"), ("highpass", "stimulus"), ("highpass", "oracle")}


@schema
class ScanGroup(dj.Manual):
    definition = """
    # scans whose similarity matrices are averaged into one target (they share an image set)
    scan_group : varchar(64)             # e.g. 'sim-demo-0' (all scans of a simulated experiment)
    ---
    -> ImageSet
    description = '' : varchar(1024)     # what the group stands for
    """

    class Member(dj.Part):
        definition = """
        # one scan of the group
        -> master
        -> Scan
        """

    @classmethod
    def add(cls, name: str, scans=None, *, image_set: str | None = None, description: str = "") -> dict:
        """Create a group of `scans` (keys or a restriction of Scan; default: every scan of
        `image_set`). Idempotent; refuses a different membership under an existing name."""
        rel = Scan & (scans if scans is not None else {"image_set": image_set})
        keys = rel.keys(order_by="animal_id, session, scan_idx")
        if not keys:
            raise ValueError(f"scan group {name!r}: no scans match")
        sets = set((Scan & keys).to_arrays("image_set"))
        if len(sets) != 1 or (image_set is not None and sets != {image_set}):
            raise ValueError(f"scan group {name!r}: scans must share one image set, got {sorted(sets)}")
        image_set = sets.pop()
        key = {"scan_group": name}
        wanted = {tuple(k.values()) for k in keys}
        if cls & key:
            stored = {(k["animal_id"], k["session"], k["scan_idx"])
                      for k in (cls.Member & key).keys()}
            if stored != wanted:
                raise ValueError(f"scan group {name!r} already exists with other scans; "
                                 "choose another name or delete it first")
            return key
        with cls.connection.transaction:
            cls.insert1({**key, "image_set": image_set, "description": description[:1024]})
            cls.Member.insert({**key, **k} for k in keys)
        return key


@schema
class SimilarityConfig(dj.Lookup):
    definition = """
    # how a similarity matrix is made, addressed by its content
    sim_hash : char(32)                  # md5 of the canonical JSON of the settings below
    ---
    method : enum('data', 'oracle', 'model', 'shuffle', 'vgg', 'lowpass', 'highpass')   # see the module docstring
    image_subset : enum('stimulus', 'oracle')   # stimulus: train+validation images (the target); oracle: the repeated images
    -> [nullable] PredictiveModelConfig  # model, shuffle: whose responses (null otherwise)
    -> [nullable] PredictiveSeed         # model, shuffle: the seed of that trained model (null otherwise)
    shuffle_seed = null : int32          # shuffle: seed of the image permutation
    vgg_layer = null : varchar(16)       # vgg: feature layer, e.g. 'conv3_1'
    blur_sigma = null : float64          # (stimulus pixels) lowpass, highpass: s.d. of the Gaussian blur
    label : varchar(64)                  # short name for tables and figures, e.g. 'model/stimulus'
    """

    @classmethod
    def add(cls, method: str, image_subset: str = "stimulus", *, model: dict | str | None = None,
            model_seed: int | None = None, shuffle_seed: int | None = None, vgg_layer: str | None = None,
            blur_sigma: float | None = None) -> dict:
        """Insert a configuration and return its key (an identical one returns the existing key).
        model: for 'model' / 'shuffle', a PredictiveModelConfig key (or hash); model_seed: which of its
        seeds (default: the key's 'model_seed', else 0; inserted into PredictiveSeed, so that model
        is trained). blur_sigma: for 'lowpass' / 'highpass' (default
        compute.similarity.pixel_targets.DEFAULT_SIGMA)."""
        if (method, image_subset) not in _VALID:
            raise ValueError(f"similarity method {method!r} is not defined on the {image_subset!r} images; "
                             f"valid: {sorted(_VALID)}")
        model_hash = model["model_hash"] if isinstance(model, dict) else model
        if method in ("model", "shuffle"):
            if not model_hash or not (PredictiveModelConfig & {"model_hash": model_hash}):
                raise ValueError(f"similarity method {method!r} needs an existing PredictiveModelConfig "
                                 f"(got {model_hash!r})")
            model_seed = model_key(model, model_seed)["model_seed"]
            PredictiveSeed.add(model_seed)
        elif model_hash or model_seed is not None:
            raise ValueError(f"similarity method {method!r} takes no predictive model or model seed")
        if method == "shuffle":
            shuffle_seed = 0 if shuffle_seed is None else int(shuffle_seed)
        elif shuffle_seed is not None:
            raise ValueError("shuffle_seed is only for the 'shuffle' method")
        if method == "vgg":
            vgg_layer = vgg_layer or "conv3_1"
        elif vgg_layer is not None:
            raise ValueError("vgg_layer is only for the 'vgg' method")
        settings = {"method": method, "image_subset": image_subset, "model_hash": model_hash or None,
                    "shuffle_seed": shuffle_seed, "vgg_layer": vgg_layer}
        if method in ("model", "shuffle"):
            settings["model_seed"] = model_seed    # hashed only here: the other methods' addresses are unchanged
        if method in PIXEL_METHODS:
            from .compute.similarity import pixel_targets
            blur_sigma = pixel_targets.DEFAULT_SIGMA if blur_sigma is None else blur_sigma
            pixel_targets.gaussian_kernel(blur_sigma)              # refuses a bad sigma here
            # only these methods hash the key, so the other methods' content addresses are unchanged
            settings["blur_sigma"] = float(blur_sigma)
        elif blur_sigma is not None:
            raise ValueError("blur_sigma is only for the 'lowpass' and 'highpass' methods")
        label = f"{method}/{image_subset}" + (f"/seed{shuffle_seed}" if method == "shuffle" else "") + \
            (f"/{vgg_layer}" if method == "vgg" else "") + \
            (f"/sigma{settings['blur_sigma']:g}" if method in PIXEL_METHODS else "")
        key = {"sim_hash": config_hash(settings)}
        cls.insert1({**key, **settings, "label": label}, skip_duplicates=True)
        return key

    @classmethod
    def add_standard(cls, model: dict | str, *, model_seed: int | None = None, vgg: bool = True,
                     shuffle_seed: int = 0) -> dict[str, dict]:
        """The paper's set for one trained predictive model (config `model`, seed `model_seed` as in
        `add`): every method on the stimulus images, plus oracle and model on the oracle images
        (Fig. 1). Returns {label: key}."""
        keys = {}
        for method, subset in [("data", "stimulus"), ("model", "stimulus"), ("shuffle", "stimulus"),
                               ("oracle", "oracle"), ("model", "oracle")] + \
                              ([("vgg", "stimulus")] if vgg else []):
            uses_model = method in ("model", "shuffle")
            key = cls.add(method, subset, model=model if uses_model else None,
                          model_seed=model_seed if uses_model else None,
                          shuffle_seed=shuffle_seed if method == "shuffle" else None)
            keys[(cls & key).fetch1("label")] = key
        return keys


@schema
class SimilarityMatrix(dj.Computed):
    definition = """
    # the similarity matrix of one scan's images, by one method (Eqs. 2, 3, 6 and the controls)
    -> Scan
    -> SimilarityConfig
    ---
    n_images : int32                     # rows (= columns) of the matrix
    image_ids : <blob>                   # int64 (n_images,), sorted: the images of the rows and columns
    matrix : <npy@main>                  # float32 (n_images, n_images), symmetric; cosine similarity of centered vectors (-1..1)
    n_dims : int32                       # dimensions of the compared vectors: neurons with nonzero weight, or VGG features
    mean_offdiag : float64               # mean of the off-diagonal values
    std_offdiag : float64                # standard deviation of the off-diagonal values
    details = '' : varchar(255)          # provenance, e.g. the VGG weights file and its checksum
    """

    class Source(dj.Part):
        definition = """
        # the predictive model (config and seed) a model or shuffle matrix was computed from: deleting
        # the model deletes the matrix (delete(part_integrity="cascade")), so no matrix outlives its source
        -> master
        -> PredictiveModel
        """

    class Weights(dj.Part):
        definition = """
        # the Eq. 1 weights w_a (Neuron) a data, oracle, model or shuffle matrix was computed with:
        # deleting or recomputing them deletes the matrix (delete(part_integrity="cascade")), so no
        # matrix outlives its weights
        -> master
        -> Neuron
        """

    reserve_timeout = 3600   # s a job may stay reserved before populate.jobs reclaims it (VGG features of 5000 images take minutes on a CPU)

    @property
    def key_source(self):
        with_w = (Scan.proj() & Neuron.proj())
        plain = with_w * (SimilarityConfig & "method in ('data', 'oracle')").proj()
        vgg = Scan.proj() * (SimilarityConfig & "method in ('vgg', 'lowpass', 'highpass')").proj()   # pixels only
        model = ((Scan.proj() & Neuron.proj())
                 * (SimilarityConfig & "method in ('model', 'shuffle')").proj("model_hash", "model_seed")
                 * PredictiveModel.proj()).proj()
        return plain + vgg + model

    def make_fetch(self, key):
        return (Scan & key).fetch1("data_hash"), (SimilarityConfig & key).fetch1("label")

    def make_compute(self, key, data_hash, label):
        cfg = (SimilarityConfig & key).fetch1()
        matrix, image_ids, n_dims, details = scan_similarity(key, cfg)
        return matrix, image_ids, n_dims, details

    def make_insert(self, key, matrix, image_ids, n_dims, details):
        off = rsa.upper(matrix)
        self.insert1({**key, "n_images": len(image_ids), "image_ids": np.asarray(image_ids, dtype=np.int64),
                      "matrix": np.ascontiguousarray(matrix, dtype=np.float32), "n_dims": int(n_dims),
                      "mean_offdiag": float(off.mean()), "std_offdiag": float(off.std()),
                      "details": details[:255]})
        method, model_hash, model_seed = (SimilarityConfig & key).fetch1("method", "model_hash", "model_seed")
        if method in WEIGHTED_METHODS:
            self.Weights.insert1(key)
        if model_hash:
            self.Source.insert1({**key, "model_hash": model_hash, "model_seed": model_seed})


@schema
class AveragedSimilarity(dj.Computed):
    definition = """
    # a similarity matrix averaged over the scans of a group: the regularization target
    -> ScanGroup
    -> SimilarityConfig
    ---
    n_scans : int32                      # scans averaged
    n_images : int32                     # images common to all scans of the group
    image_ids : <blob>                   # int64 (n_images,), sorted
    matrix : <npy@main>                  # float32 (n_images, n_images): mean over scans of SimilarityMatrix.matrix
    mean_offdiag : float64               # mean of the off-diagonal values
    std_offdiag : float64                # standard deviation of the off-diagonal values
    """
    reserve_timeout = 1800   # s a job may stay reserved before populate.jobs reclaims it (reads and writes a few 5000 x 5000 matrices)

    class Member(dj.Part):
        definition = """
        # the per-scan matrices averaged: deleting or recomputing one deletes the average
        # (delete(part_integrity="cascade")), so no average outlives its inputs
        -> master
        -> SimilarityMatrix
        """

    @property
    def key_source(self):
        # groups whose every member has the matrix
        missing = (ScanGroup.Member.proj() * SimilarityConfig.proj()) - SimilarityMatrix.proj()
        return (ScanGroup.proj() * SimilarityConfig.proj()) - missing.proj()

    def make_fetch(self, key):
        # the members' scans and their matrices' content (a matrix recomputed meanwhile changes this)
        return tuple((SimilarityMatrix & (ScanGroup.Member & key) & key).to_arrays(
            "animal_id", "session", "scan_idx", "mean_offdiag", order_by="animal_id, session, scan_idx"))

    def make_compute(self, key, *members):
        rows = (SimilarityMatrix & (ScanGroup.Member & key) & key).to_dicts(order_by="animal_id, session, scan_idx")
        method = (SimilarityConfig & key).fetch1("method")
        ids = [np.asarray(r["image_ids"]) for r in rows]
        if method == "shuffle" and any(len(i) != len(ids[0]) or np.any(i != ids[0]) for i in ids):
            raise ValueError(f"scan group {key['scan_group']!r}: the shuffle control is averaged only over scans "
                             "that saw the same images (a relabelling restricted to common images is not one)")
        matrix, common = rsa.common_average([np.asarray(r["matrix"].load()) for r in rows], ids)
        scans = [{k: r[k] for k in ("animal_id", "session", "scan_idx")} for r in rows]
        return matrix, common, scans

    def make_insert(self, key, matrix, image_ids, scans):
        off = rsa.upper(matrix)
        self.insert1({**key, "n_scans": len(scans), "n_images": len(image_ids),
                      "image_ids": np.asarray(image_ids, dtype=np.int64),
                      "matrix": np.ascontiguousarray(matrix, dtype=np.float32),
                      "mean_offdiag": float(off.mean()), "std_offdiag": float(off.std())})
        self.Member.insert({**key, **scan} for scan in scans)


@schema
class SimilarityStability(dj.Computed):
    definition = """
    # the paper's checks on the oracle images (Fig. 1C, D) for a group and a predictive model (config and seed)
    -> ScanGroup
    -> PredictiveModelConfig
    -> PredictiveSeed
    ---
    n_scans : int32                      # scans of the group
    n_oracle_images : int32              # oracle images common to all scans (Eq. 4)
    scan_fluctuation = null : json       # Eq. 4 summary (n, mean, std, quantiles) over scans h and pairs i<j; null with one scan
    repeat_fluctuation : json            # Eq. 5 summary over scans, images and repeat pairs t1<t2
    scan_values = null : <npy@main>      # float32: every Eq. 4 value (Fig. 1C histogram); null with one scan
    repeat_values : <npy@main>           # float32: every Eq. 5 value
    r_model_oracle : float64             # mean over scans of r(S_model, S_oracle) on the oracle images (paper: 0.73)
    r_data_oracle : float64              # mean over scans of r(S_data, S_oracle), single-trial pairs of different images (paper: 0.39)
    """
    reserve_timeout = 1800   # s a job may stay reserved before populate.jobs reclaims it (oracle matrices of a few scans)

    class Member(dj.Part):
        definition = """
        # the Fig. 1D correlations of one scan (its predictive model and its Eq. 1 weights dependencies:
        # recomputing either deletes this, delete(part_integrity="cascade"))
        -> master
        -> ScanGroup.Member
        -> PredictiveModel
        -> Neuron
        ---
        r_model_oracle : float64         # Pearson r of S_model vs S_oracle over image pairs i<j
        r_data_oracle : float64          # Pearson r of single-trial S_data(i_t, j_t') vs S_oracle_ij
        repeat_fluctuation_std : float64 # s.d. of this scan's Eq. 5 values
        oracle_range : float64           # s.d. of S_oracle off the diagonal
        model_range : float64            # s.d. of S_model off the diagonal (the paper: a wider range)
        """

    @property
    def key_source(self):
        ready = PredictiveModel.proj() & Neuron.proj()
        models = PredictiveModelConfig.proj() * PredictiveSeed.proj()
        missing = (ScanGroup.Member.proj() * models) - ready
        return (ScanGroup.proj() * models) - missing.proj()

    def make_fetch(self, key):
        return tuple((Scan & (ScanGroup.Member & key)).to_arrays("data_hash", order_by="animal_id, session, scan_idx"))

    def make_compute(self, key, *hashes):
        members = (ScanGroup.Member & key).keys(order_by="animal_id, session, scan_idx")
        try:
            master, rows = rsa.stability([oracle_data(k, _one_model(key)) for k in members])
        except ValueError as error:
            raise ValueError(f"scan group {key['scan_group']!r}: {error}") from error
        return master, [{**member, **row} for member, row in zip(members, rows)]

    def make_insert(self, key, master, rows):
        self.insert1({**key, **master})
        self.Member.insert({**key, **r} for r in rows)


# ------------------------------------------------------------------ fetching the inputs of a matrix

def _per_column(rel, attribute: str, key) -> np.ndarray:
    """A per-unit value as a vector indexed by Scan.Unit.column (0 for units without a row)."""
    cols, values = (rel * Scan.Unit & key).to_arrays("column", attribute, order_by="column")
    out = np.zeros(len(Scan.Unit & key))
    out[np.asarray(cols, dtype=np.int64)] = values
    return out


def _weights(key) -> np.ndarray:
    """w_a per Scan.Unit column (Eq. 1)."""
    return _per_column(Neuron.Unit, "snr_weight", key)


def _one_model(model: dict) -> dict:
    """The restriction to one trained predictive model: both its config and its seed, never a default."""
    return {"model_hash": model["model_hash"], "model_seed": int(model["model_seed"])}


def _test_corr(key, model: dict) -> np.ndarray:
    """v_a per Scan.Unit column of the predictive model `model` ({'model_hash', 'model_seed'})."""
    return _per_column(PredictiveModel.Unit & _one_model(model), "test_corr", key)


def _predictions(key, model: dict, image_ids) -> np.ndarray:
    """The responses of the predictive model `model` ({'model_hash', 'model_seed'}) to `image_ids`
    (rows) under average behavior."""
    row = (PredictiveModel & key & _one_model(model)).fetch1()
    all_ids = np.asarray(row["image_ids"])
    idx = np.searchsorted(all_ids, image_ids)
    if np.any(idx >= len(all_ids)) or np.any(all_ids[np.minimum(idx, len(all_ids) - 1)] != image_ids):
        raise ValueError(f"predictive model of scan {key} lacks predictions for some images")
    return np.asarray(row["predictions"].load())[idx]


def subset_trials(key, subset: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows of Scan.responses, image ids) of the scan's trials in an image subset, in trial order."""
    tiers = "tier in ('train', 'validation')" if subset == "stimulus" else "tier = 'oracle'"
    rel = Trial & key & tiers
    if subset == "oracle":
        rel = rel & OracleTrial
    rows, ids = rel.to_arrays("row", "image_id", order_by="trial_idx")
    if len(rows) == 0:
        raise ValueError(f"scan {key}: no trials in the {subset!r} image subset")
    return np.asarray(rows, dtype=np.int64), np.asarray(ids, dtype=np.int64)


def oracle_data(key, model: dict) -> dict:
    """The arguments of rsa.scan_checks for one scan: oracle trials, weights, the responses of the
    predictive model `model` ({'model_hash', 'model_seed'})."""
    rows, trial_ids = subset_trials(key, "oracle")
    return {"responses": scan_responses(key)[rows], "image_ids": trial_ids, "weights": _weights(key),
            "test_corr": _test_corr(key, model),
            "predictions": _predictions(key, model, np.unique(trial_ids))}


def scan_similarity(key: dict, cfg: dict) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(matrix, sorted image ids, vector dimension, details) of one scan by one SimilarityConfig row."""
    method, subset = cfg["method"], cfg["image_subset"]
    rows, trial_ids = subset_trials(key, subset)
    image_ids = np.unique(trial_ids)
    if method == "oracle":
        w = _weights(key)
        matrix, ids = rsa.oracle_similarity(scan_responses(key)[rows], trial_ids, w)
        return matrix, ids, int(np.sum(w > 0)), f"{len(rows)} oracle trials"
    if method == "data":
        w = _weights(key)
        mean, ids = rsa.mean_by_image(scan_responses(key)[rows], trial_ids)
        repeated = len(trial_ids) - len(ids)
        return (rsa.similarity(mean, w), ids, int(np.sum(w > 0)),
                f"single trials; {repeated} repeated trials averaged" if repeated else "single trials")
    if method in ("model", "shuffle"):
        model = {"model_hash": cfg["model_hash"], "model_seed": cfg["model_seed"]}
        w, v = _weights(key), _test_corr(key, model)
        matrix = rsa.model_similarity(_predictions(key, model, image_ids), w, v)
        dims = int(np.sum((w > 0) & (v > 0)))
        if method == "shuffle":
            matrix, _ = rsa.shuffle_similarity(matrix, int(cfg["shuffle_seed"]))
            return matrix, image_ids, dims, f"model matrix, images permuted with seed {cfg['shuffle_seed']}"
        return matrix, image_ids, dims, "model responses at average behavior, mean eye position"
    if method == "vgg":
        from .compute.similarity import vgg
        images = image_pixels((Scan & key).fetch1("image_set"), image_ids)
        state, source = vgg.load_vgg19_state(layer=cfg["vgg_layer"], with_source=True)
        features = vgg.vgg_features(images, state, layer=cfg["vgg_layer"])
        return (rsa.similarity(features, overwrite_input=True), image_ids, features.shape[1],
                f"VGG19 {cfg['vgg_layer']} ImageNet weights {source}")
    if method in PIXEL_METHODS:
        from .compute.similarity import pixel_targets
        images = image_pixels((Scan & key).fetch1("image_set"), image_ids)
        sigma = float(cfg["blur_sigma"])
        return (pixel_targets.pixel_similarity(images, method, sigma), image_ids, int(np.prod(images.shape[1:])),
                f"{method} pixels: Gaussian blur sigma {sigma:g} px, centred over the {len(image_ids)} images")
    raise ValueError(f"unknown similarity method {method!r}")
