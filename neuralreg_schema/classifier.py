"""Classifier schema: image classifiers trained jointly with the neural similarity loss (paper Sec. 3).

    ClassificationDataset   a labeled image data set (grayscale CIFAR-10/100, or the offline stand-in)
    ClassifierConfig        a complete training recipe, addressed by its content (alpha included)
    Seed                    the random seeds a study trains
    Regularizer             what the similarity loss matches: nothing ('none') or a group-averaged
                            similarity matrix (neural model / neural data / shuffle / VGG, or the
                            known-answer pixel controls lowpass / highpass)
    ClassifierPlan          the combinations to train: data set x config x regularizer x seed (a plan
                            lists them explicitly, so an alpha sweep trains 'none' once, not per alpha)
    RegularizedClassifier   one trained network per planned combination
      .Epoch                its per-epoch history (losses, accuracies, gamma_k)
      .LayerWeight          its final layer weights gamma_k (Eq. 10)

A Regularizer names a ScanGroup and a SimilarityConfig, not an AveragedSimilarity row, so a study
can be planned before its targets exist: `RegularizedClassifier.key_source` holds a planned
regularized combination back until the AveragedSimilarity it names is computed.

Training runs in `make_compute` (three-part make, no transaction held). After every epoch the full
training state goes to the object store under `_checkpoints/<schema>/<table>/<md5 of the key>.pt`
(`StoreCheckpoint`); a job that is killed and later re-run (after `populate.jobs` reclaims it)
resumes after its last finished epoch, and the row records `resumed_from_epoch`. The checkpoint is
deleted once the row is inserted. The numbers come from compute/classifier/train.py.
"""
from __future__ import annotations

import logging

import numpy as np

from . import settings
from .checkpoints import StoreCheckpoint
from .configs import derived_name, insert_named
from .experiment import image_pixels
from .hashing import config_hash
from .similarity import AveragedSimilarity, ScanGroup, SimilarityConfig
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.classifier")

schema = dj.Schema()

POPULATE_ORDER = ("RegularizedClassifier",)

# regularizer kind -> (similarity method, label in tables and figures)
KINDS = {"none": (None, "None"), "neural-model": ("model", "Neural (model)"),
         "neural-data": ("data", "Neural (data)"), "shuffle": ("shuffle", "Shuffle"), "vgg": ("vgg", "VGG"),
         # known-answer controls: Eq. 2 on blurred pixels / on their fine detail (compute/similarity/pixel_targets.py)
         "lowpass": ("lowpass", "Lowpass"), "highpass": ("highpass", "Highpass")}


@schema
class ClassificationDataset(dj.Lookup):
    definition = """
    # a labeled image data set the classifiers train and are tested on
    dataset : varchar(32)                # 'cifar10', 'cifar100', 'offline' (digits) or 'offline-photos' (compute.classifier.datasets.load_dataset)
    ---
    display_name : varchar(128)          # e.g. 'cifar10 (grayscale)'; the offline ones say they are stand-ins
    is_stand_in : bool                   # true: not CIFAR but the small offline substitute (say so in every report)
    n_classes : int32                    # classes (labels 0 .. n_classes - 1)
    n_train : int32                      # training images
    n_test : int32                       # test images
    image_height : int32                 # (pixels) image height
    image_width : int32                  # (pixels) image width
    content_md5 : char(32)               # md5 of images and labels: every worker must load identical data
    classes : json                       # class names, in label order
    source : varchar(1024)               # where the data came from (archive checksum, package version)
    """

    @classmethod
    def add(cls, name: str = "offline", **load_kw) -> dict:
        """Load a data set once (CIFAR: download into the cache or read `root=`) and register it.
        Idempotent; refuses a data set whose content differs from the registered one."""
        from .compute.classifier import datasets, train as train_classifier
        data = datasets.load_dataset(name, **load_kw)
        key = {"dataset": name.lower()}
        md5 = train_classifier.data_fingerprint(data)
        if cls & key:
            stored = (cls & key).fetch1("content_md5")
            if stored != md5:
                raise ValueError(f"data set {name!r} is registered with content md5 {stored}, "
                                 f"but the data loaded here has {md5}")
            return key
        cls.insert1({**key, "display_name": (data.name if data.is_stand_in else f"{data.name} (grayscale)")[:128],
                     "is_stand_in": bool(data.is_stand_in), "n_classes": data.n_classes,
                     "n_train": len(data.train_images), "n_test": len(data.test_images),
                     "image_height": int(data.train_images.shape[1]), "image_width": int(data.train_images.shape[2]),
                     "content_md5": md5, "classes": list(data.classes), "source": data.source[:1024]},
                    skip_duplicates=True)
        return key

    @classmethod
    def load(cls, key) -> "object":
        """The registered data set as compute/classifier/data.ClassificationData, checked against its md5."""
        from .compute.classifier import datasets, train as train_classifier
        row = (cls & key).fetch1()
        data = datasets.load_dataset(row["dataset"])
        md5 = train_classifier.data_fingerprint(data)
        if md5 != row["content_md5"]:
            raise ValueError(f"data set {row['dataset']!r} on this machine (md5 {md5}) differs from the registered "
                             f"one ({row['content_md5']}); point NEURALREG_DATA at the same files")
        return data


@schema
class ClassifierConfig(dj.Lookup):
    definition = """
    # a complete classifier training recipe, addressed by its content
    clf_hash : char(32)                  # md5 of the canonical JSON of `config`
    ---
    config_name : varchar(64)            # unique name, e.g. 'paper', 'demo', 'paper-alpha5' (configs.derived_name)
    alpha : float64                      # Eq. 7 regularization strength (also in config; here for queries)
    arch : varchar(16)                   # resnet18 | resnet34
    config : json                        # every setting (compute/classifier/recipes.check_config)
    unique index (config_name)
    """

    @classmethod
    def add(cls, config: dict | str = "demo", name: str | None = None, **overrides) -> dict:
        """Insert a recipe (a name of recipes.CONFIGS or a dict, with overrides) and return
        its key; an identical recipe returns the existing key (under its first name). Without `name`,
        a recipe with overrides is named after both ('paper-archresnet34'); a name that already names
        another recipe is refused (ValueError)."""
        from .compute.classifier import recipes
        recipe = None
        if isinstance(config, str):
            recipe, config = config, recipes.default_config(config)
        config = recipes.check_config({**config, **overrides})
        key = {"clf_hash": config_hash(config)}
        return insert_named(cls, key, {**key, "config_name": name or derived_name(recipe, overrides, key["clf_hash"]),
                                       "alpha": config["alpha"], "arch": config["arch"], "config": config})


@schema
class Seed(dj.Lookup):
    definition = """
    # a random seed of classifier training (initialisation, batch order, augmentation)
    seed : int32                         # seed of torch and numpy in compute/classifier/train.py; not the predictive model's model_seed
    """

    @classmethod
    def add(cls, *seeds: int) -> list[dict]:
        rows = [{"seed": int(s)} for s in seeds]
        cls.insert(rows, skip_duplicates=True)
        return rows


@schema
class Regularizer(dj.Lookup):
    definition = """
    # what the similarity loss of a classifier matches, addressed by its content
    reg_hash : char(32)                  # md5 of kind, scan group and similarity config
    ---
    kind : enum('none', 'neural-model', 'neural-data', 'shuffle', 'vgg', 'lowpass', 'highpass')   # see KINDS
    label : varchar(64)                  # for tables and figures: 'None', 'Neural (model)', 'Neural (data)', 'Shuffle', 'VGG', 'Lowpass', 'Highpass'
    -> [nullable] ScanGroup              # whose averaged matrix (null for 'none')
    -> [nullable] SimilarityConfig       # which matrix (method on the 'stimulus' images; null for 'none')
    """

    @classmethod
    def add(cls, kind: str, group: str | dict | None = None, *, model: dict | str | None = None,
            model_seed: int | None = None, shuffle_seed: int = 0, vgg_layer: str = "conv3_1",
            blur_sigma: float | None = None, label: str | None = None) -> dict:
        """A regularizer of `kind` towards the averaged matrix of scan `group`; model, model_seed: the
        PredictiveModelConfig and its seed for 'neural-model' and 'shuffle' (SimilarityConfig.add);
        blur_sigma: the blur (stimulus pixels) of 'lowpass' / 'highpass' (default
        compute.similarity.pixel_targets.DEFAULT_SIGMA); label: what tables and figures call it
        (default the kind's, e.g. 'Neural (model)'; not part of its hash: the first insert names it).
        Creates the SimilarityConfig it needs."""
        if kind not in KINDS:
            raise ValueError(f"unknown regularizer kind {kind!r}; choose one of {', '.join(KINDS)}")
        method, default_label = KINDS[kind]
        label = label or default_label
        if len(label) > 64:
            raise ValueError(f"regularizer label {label!r} is longer than 64 characters")
        group = group["scan_group"] if isinstance(group, dict) else group
        if method is not None and method not in ("model", "shuffle") and (model is not None or model_seed is not None):
            raise ValueError(f"regularizer {kind!r} takes no predictive model")
        if method is None:
            if group is not None or model is not None or model_seed is not None:
                raise ValueError("the 'none' regularizer takes no scan group or model")
            row = {"kind": kind, "label": label, "scan_group": None, "sim_hash": None}
        else:
            if not group or not (ScanGroup & {"scan_group": group}):
                raise ValueError(f"regularizer {kind!r} needs an existing scan group, got {group!r}")
            uses_model = method in ("model", "shuffle")
            sim = SimilarityConfig.add(method, "stimulus", model=model if uses_model else None,
                                       model_seed=model_seed if uses_model else None,
                                       shuffle_seed=shuffle_seed if method == "shuffle" else None,
                                       vgg_layer=vgg_layer if method == "vgg" else None,
                                       blur_sigma=blur_sigma if method in ("lowpass", "highpass") else None)
            row = {"kind": kind, "label": label, "scan_group": group, **sim}
        key = {"reg_hash": config_hash({k: row[k] for k in ("kind", "scan_group", "sim_hash")})}
        cls.insert1({**key, **row}, skip_duplicates=True)
        return key

    @classmethod
    def add_standard(cls, group: str, model: dict | str, *, model_seed: int | None = None, vgg: bool = False,
                     shuffle_seed: int = 0) -> dict:
        """The paper's set for one scan group and predictive model (config `model`, seed `model_seed`):
        None, Neural (model), Neural (data), Shuffle (+ VGG). Returns {label: key}."""
        kinds = ["none", "neural-model", "neural-data", "shuffle"] + (["vgg"] if vgg else [])
        return {KINDS[k][1]: cls.add(k, None if k == "none" else group,
                                     model=model if k in ("neural-model", "shuffle") else None,
                                     model_seed=model_seed if k in ("neural-model", "shuffle") else None,
                                     shuffle_seed=shuffle_seed) for k in kinds}


@schema
class ClassifierPlan(dj.Manual):
    definition = """
    # a classifier to train: one combination of data set, recipe, regularizer and seed
    -> ClassificationDataset
    -> ClassifierConfig
    -> Regularizer
    -> Seed
    ---
    planned_at = CURRENT_TIMESTAMP : datetime   # when the combination was planned
    """

    @classmethod
    def add(cls, datasets, configs, regularizers, seeds) -> list[dict]:
        """Plan every combination of the given keys (dicts or lists of dicts; seeds: ints); idempotent.
        Returns the keys."""
        def many(x):
            return list(x) if isinstance(x, (list, tuple)) else [x]
        seeds = [{"seed": int(s)} if not isinstance(s, dict) else s for s in many(seeds)]
        Seed.insert(seeds, skip_duplicates=True)
        keys = [{**d, **c, **r, **s} for d in many(datasets) for c in many(configs)
                for r in many(regularizers) for s in seeds]
        cls.insert(keys, skip_duplicates=True)
        return keys


@schema
class RegularizedClassifier(dj.Computed):
    definition = """
    # a ResNet trained on a data set with (or without) the neural similarity loss (Eqs. 7-10)
    -> ClassifierPlan
    ---
    test_accuracy : float64              # (fraction correct) clean test accuracy of the final network
    train_accuracy : float64             # (fraction correct) accuracy on the last epoch's (augmented) training batches
    alpha : float64                      # Eq. 7 weight applied (0 for the 'none' regularizer)
    initial_heldout_loss = null : float64   # Eq. 8 over all pairs of the held-out stimuli, before training
    heldout_loss = null : float64        # ... after training (null without a target or held-out stimuli)
    epochs_run : int32                   # epochs in the history
    resumed_from_epoch : int32           # epochs restored from a checkpoint (0: trained in one run)
    pairs_per_step : int32               # similarity pairs per training step (0: unregularized)
    n_stimuli_train : int32              # target images drawn for the similarity batches
    n_stimuli_heldout : int32            # target images kept out (held-out pairs)
    n_train_images : int32               # classification images trained on
    n_parameters : int64                 # network parameters (layer logits excluded)
    weights : <hash@main>                # torch.save bytes: compute/classifier/network.load_classifier
    train_seconds : float64              # (s) wall time of the run that finished it
    """ + settings.PROVENANCE + """
    trained_at = CURRENT_TIMESTAMP : datetime   # when the row was inserted
    """
    # s a job may stay reserved before populate.jobs reclaims it: a paper-size model trains for hours on
    # a GPU (4.5 h in the paper) and days on a CPU; a dead worker's job is reclaimed at once by its
    # connection, and a reclaimed job loses at most one epoch (checkpoints)
    reserve_timeout = 259200

    class Epoch(dj.Part):
        definition = """
        # one epoch of the training history
        -> master
        epoch : int32                    # 1-based
        ---
        lr : float64                     # learning rate of the epoch
        task_loss : float64              # mean cross-entropy over the epoch's steps
        similarity_loss = null : float64   # mean Eq. 8 loss over the steps (null: unregularized)
        train_accuracy : float64         # (fraction correct) running accuracy over the epoch's augmented training batches
        test_accuracy : float64          # (fraction correct) clean test accuracy after the epoch
        heldout_loss = null : float64    # Eq. 8 over the held-out stimulus pairs after the epoch
        gamma = null : json              # the K layer weights after the epoch
        seconds : float64                # (s) wall time of the epoch and its evaluation
        """

    class LayerWeight(dj.Part):
        definition = """
        # the final gamma_k of Eq. 10 (regularized classifiers only)
        -> master
        layer : int32                    # conv index (compute/classifier/resnet.py numbering)
        ---
        gamma : float64                  # softmax weight, sums to 1 over the layers
        """

    @property
    def key_source(self):
        # planned, and either unregularized or with its averaged similarity matrix computed
        return ClassifierPlan.proj() & [(Regularizer & "kind = 'none'").proj(),
                                        ((Regularizer & "kind != 'none'") & AveragedSimilarity.proj()).proj()]

    def make_fetch(self, key):
        reg = (Regularizer & key).fetch1()
        return (ClassificationDataset & key).fetch1("content_md5"), reg["kind"], reg["sim_hash"] or ""

    def make_compute(self, key, content_md5, kind, sim_hash):
        from .compute.classifier import train as train_classifier
        row = (ClassifierConfig & key).fetch1()
        config, config_name = dict(row["config"]), row["config_name"]
        data = ClassificationDataset.load(key)
        target = load_target(key) if kind != "none" else None
        name = "{dataset}/{reg}/seed{seed}".format(dataset=key["dataset"], reg=kind, seed=key["seed"])

        def progress(message):
            log.info("RegularizedClassifier %s [%s]: %s", name, config_name, message)

        checkpoint = StoreCheckpoint(self, key)
        result = train_classifier.train_classifier(data, target, config, seed=int(key["seed"]),
                                                   progress=progress, checkpoint=checkpoint)
        alpha = config["alpha"] if target is not None else 0.0
        return result, float(alpha)

    def make_insert(self, key, result, alpha):
        self.insert1({
            **key, "test_accuracy": float(result.test_accuracy), "train_accuracy": float(result.train_accuracy),
            "alpha": alpha, "initial_heldout_loss": result.initial_heldout_loss,
            "heldout_loss": result.heldout_loss, "epochs_run": len(result.history),
            "resumed_from_epoch": int(result.resumed_from_epoch), "pairs_per_step": int(result.pairs_per_step),
            "n_stimuli_train": int(result.n_stimuli_train), "n_stimuli_heldout": int(result.n_stimuli_heldout),
            "n_train_images": int(result.meta["n_train"]), "n_parameters": int(result.n_parameters),
            "weights": result.state, "train_seconds": float(result.seconds), **settings.provenance(result.device)})
        self.Epoch.insert([{**key, "epoch": int(h["epoch"]), "lr": float(h["lr"]), "task_loss": float(h["task_loss"]),
                            "similarity_loss": h["similarity_loss"], "train_accuracy": float(h["train_accuracy"]),
                            "test_accuracy": float(h["test_accuracy"]), "heldout_loss": h["heldout_similarity_loss"],
                            "gamma": h["gamma"], "seconds": float(h["seconds"])} for h in result.history])
        if result.gamma is not None:
            self.LayerWeight.insert([{**key, "layer": int(k), "gamma": float(g)}
                                     for k, g in zip(result.layers, result.gamma)])
        if alpha > 0:
            reg = (Regularizer & key).fetch1()
            self.Target.insert1({**key, "scan_group": reg["scan_group"], "sim_hash": reg["sim_hash"]})
        # the row is in (its transaction commits next); a lost checkpoint now only costs a re-run
        StoreCheckpoint(self, key).remove()

    class Target(dj.Part):
        definition = """
        # the averaged similarity matrix a regularized classifier was trained towards: deleting or
        # recomputing the target deletes the classifier (delete(part_integrity="cascade"))
        -> master
        -> AveragedSimilarity
        """

    def network(self, key=None, device="cpu"):
        """The trained network of one row, in eval mode (inputs: (B, 1, H, W) in [0, 1])."""
        from .compute.classifier import network
        rel = self & key if key is not None else self
        return network.load_classifier(rel.fetch1("weights"), device=device)


def load_target(key) -> "object":
    """The regularization target of a Regularizer row: the AveragedSimilarity matrix of its scan group
    and similarity config, with the group's stimulus pixels scaled to [0, 1]."""
    from .compute.classifier import train as train_classifier
    reg = (Regularizer & key).fetch1()
    rel = AveragedSimilarity & {"scan_group": reg["scan_group"], "sim_hash": reg["sim_hash"]}
    row = rel.fetch1()
    image_set = (ScanGroup & {"scan_group": reg["scan_group"]}).fetch1("image_set")
    ids = np.asarray(row["image_ids"], dtype=np.int64)
    pixels = image_pixels(image_set, ids) / np.float32(255.0)
    label = (SimilarityConfig & {"sim_hash": reg["sim_hash"]}).fetch1("label")
    return train_classifier.SimilarityTarget(np.clip(pixels, 0, 1).astype(np.float32),
                                             np.asarray(row["matrix"].load(), dtype=np.float32), ids,
                                             f"{reg['scan_group']}:{label}")


__all__ = ["ClassificationDataset", "ClassifierConfig", "Seed", "Regularizer", "ClassifierPlan", "RegularizedClassifier",
           "StoreCheckpoint", "load_target"]
