"""Common corruptions (issue 22): tables of the evaluation schema, in a module of their own.

    CorruptionSet          corrupted copies of a data set's test images in CIFAR-10-C's layout, in grey
      .Corruption          one corruption: uint8 (5, n, H, W), severity-major (object store)
    CorruptionAccuracy     per classifier and corruption set: the mean accuracy (+ .Severity per
                           corruption and severity); report: corruptions.csv and the Fig. 4-like figure

The tables live in the evaluation schema (`<prefix>_evaluation`): `pipeline.activate` imports this
module with evaluation.py, so they are bound with it; the worker populates CorruptionAccuracy after
evaluation's tables (pipeline.EXTENSIONS). The numbers come from compute/evaluation/corruptions.py
(the reader and validator, the accuracy) and compute/evaluation/corruption_functions.py (the local
sets of the offline stand-ins, which have no published corruption set).

Import (populate/corruptions.py, `neuralreg corruptions import|local`): `CorruptionSet.import_folder`
validates the whole folder before anything is written (a malformed folder is refused with the file
and the problem), converts every corruption to grey as the classifiers' data path does, checks that
its labels are the data set's first n test labels in order (the published set is the test set), and
inserts the set and all its corruptions in one transaction.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np

from . import settings
from .classifier import ClassificationDataset, RegularizedClassifier
from .evaluation import evaluation_device, schema
from .settings import import_datajoint

dj = import_datajoint()
log = logging.getLogger("neuralreg.corruptions")

POPULATE_ORDER = ("CorruptionAccuracy",)


def content_md5(labels: np.ndarray, images: dict) -> str:
    """md5 of the labels and of every corruption's grey images, in name order."""
    h = hashlib.md5(np.ascontiguousarray(np.asarray(labels, np.int64)).tobytes())
    for name in sorted(images):
        h.update(name.encode())
        h.update(np.ascontiguousarray(images[name]).tobytes())
    return h.hexdigest()


@schema
class CorruptionSet(dj.Manual):
    definition = """
    # corrupted copies of a data set's first n test images in CIFAR-10-C's layout, converted to grey
    -> ClassificationDataset
    corruption_set : varchar(64)         # e.g. 'cifar10-c' (published), 'offline-photos-local-c' (built here)
    ---
    is_published : bool                  # true: Hendrycks & Dietterich's published files; false: a local set built by compute/evaluation/corruption_functions.py (NOT CIFAR-10-C)
    n_images : int32                     # test images per severity (the data set's first n_images, in order)
    labels : <blob>                      # int64 (n_images,): their labels (equal to the data set's)
    content_md5 : char(32)               # md5 of the labels and the grey images (corruptions.content_md5)
    source : varchar(1024)               # what the files are and where they came from
    """

    class Corruption(dj.Part):
        definition = """
        # one corruption at its five severities
        -> master
        corruption : varchar(32)         # a published name, e.g. 'gaussian_noise' (compute/evaluation/corruptions.CORRUPTIONS)
        ---
        images : <npy@main>              # uint8 (5, n_images, H, W) grey, severity-major
        """

    @classmethod
    def import_folder(cls, folder, dataset: str, name: str, *, corruptions=None, is_published: bool = True,
                      source: str = "", data=None, progress=None) -> dict:
        """Validate, convert and insert the corruption set in `folder` (published layout) for the
        registered data set `dataset`; idempotent (the same content under the same name is a no-op;
        other content under it is refused). data: the data set already loaded. Nothing is written
        unless every file passed."""
        from .compute.evaluation import corruptions as C
        key = {"dataset": dataset, "corruption_set": name}
        if not (ClassificationDataset & {"dataset": dataset}):
            raise LookupError(f"data set {dataset!r} is not registered in this study (plan a study on it first: "
                              f"`neuralreg plan ...`)")
        data = ClassificationDataset.load({"dataset": dataset}) if data is None else data
        labels, _ = C.validate_folder(folder, corruptions, n_classes=data.n_classes,
                                      image_shape=data.test_images.shape[1:] + (3,))
        n = len(labels)
        if n > len(data.test_labels) or not np.array_equal(labels, data.test_labels[:n]):
            raise C.CorruptionSetError(f"{folder}/labels.npy: its {n} labels are not the first {n} test labels of "
                                       f"{dataset!r} in order: this corruption set belongs to another data set")
        cset = C.read_corruption_set(folder, corruptions, n_classes=data.n_classes, progress=progress)
        md5 = content_md5(cset.labels, cset.images)
        if cls & key:
            if (cls & key).fetch1("content_md5") != md5:
                raise ValueError(f"corruption set {name!r} of {dataset!r} exists with other content; choose "
                                 "another --name")
            return key
        with settings.transaction(cls.connection):
            cls.insert1({**key, "is_published": bool(is_published), "n_images": n, "labels": cset.labels,
                         "content_md5": md5, "source": (source or str(folder))[:1024]})
            cls.Corruption.insert([{**key, "corruption": c, "images": img} for c, img in cset.images.items()])
        return key


@schema
class CorruptionAccuracy(dj.Computed):
    definition = """
    # test accuracy of a classifier on a corruption set, per corruption and severity (Hendrycks & Dietterich 2019)
    -> RegularizedClassifier
    -> CorruptionSet
    ---
    n_images : int32                     # test images per severity
    clean_accuracy : float64             # (fraction correct) on the same test images, uncorrupted
    mean_accuracy : float64              # (fraction correct) mean over corruptions and severities
    seconds : float64                    # (s) wall time of the evaluation (make_compute)
    """ + settings.PROVENANCE + """
    evaluated_at = CURRENT_TIMESTAMP : datetime   # when the row was inserted
    """
    reserve_timeout = 14400   # s: 19 corruptions x 5 severities x 10 000 images of a ResNet18 take hours on a CPU

    class Severity(dj.Part):
        definition = """
        # accuracy on one corruption at one severity
        -> master
        corruption : varchar(32)         # as CorruptionSet.Corruption
        severity : int32                 # 1 .. 5
        ---
        accuracy : float64               # (fraction correct) on the n_images corrupted test images
        """

    def make_fetch(self, key):
        return (CorruptionSet & key).fetch1("content_md5"), (ClassificationDataset & key).fetch1("content_md5")

    def make_compute(self, key, set_md5, data_md5):
        import time
        from .compute.evaluation import corruptions as C
        from .compute.evaluation.noise import noise_accuracy
        t0 = time.perf_counter()
        row = (CorruptionSet & key).fetch1()
        labels = np.asarray(row["labels"], np.int64)
        data = ClassificationDataset.load(key)
        dev, described = evaluation_device()
        net = RegularizedClassifier().network(key, device=dev)
        clean = float(noise_accuracy(net, data.test_images[:len(labels)], labels, [0.0], device=dev)[0][0])
        accuracy = {}
        for part in (CorruptionSet.Corruption & key).to_dicts(order_by="corruption"):
            images = part["images"].load() if hasattr(part["images"], "load") else part["images"]
            accuracy[part["corruption"]] = C.corruption_accuracy(net, np.asarray(images), labels, device=dev)
        return len(labels), clean, accuracy, time.perf_counter() - t0, described

    def make_insert(self, key, n, clean, accuracy, seconds, described):
        if not accuracy:
            raise ValueError(f"corruption set {key['corruption_set']!r} holds no corruption")
        self.insert1({**key, "n_images": int(n), "clean_accuracy": clean,
                      "mean_accuracy": float(np.mean([a for acc in accuracy.values() for a in acc])),
                      "seconds": float(seconds), **settings.provenance(described)})
        self.Severity.insert([{**key, "corruption": c, "severity": s + 1, "accuracy": float(a)}
                              for c, acc in accuracy.items() for s, a in enumerate(acc)])
