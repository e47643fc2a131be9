"""The data the predictive trainer takes (train.py): one scan's trials and the images they
show, its validation and its fingerprint. Pure numpy; never imports datajoint.

`PredictiveData` holds the images once and the trials pointing at them. The tiers split the trials:
'train' trials are trained on, 'validation' trials drive early stopping, 'oracle' trials (repeated
test images) are never trained on and give the test scores, 'withheld' trials are ignored.
`validate` refuses unusable data with a `PredictiveDataError` naming the problem; `fingerprint` is
what a training checkpoint is matched against (a checkpoint resumes only on its own data).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .network import IMAGE_SHAPE
from ..experiment.recording import TIERS


class PredictiveDataError(ValueError):
    """The data handed to `train_predictive` is unusable; the message names the problem."""



@dataclass
class PredictiveData:
    """One scan's trials and the images they show.

    images       float32 (n_images, 36, 64), gray levels 0..255
    image_ids    int64 (n_images,), unique (kept for the caller: rows of `predictions` follow them)
    trial_image  int64 (n_trials,), row of `images` shown in each trial
    responses    float32 (n_trials, n_neurons)
    behavior     float32 (n_trials, 3): pupil, dpupil, running
    eye          float32 (n_trials, 2): eye position x, y
    tiers        str (n_trials,): 'train' | 'validation' | 'oracle' | 'withheld'
    """

    images: np.ndarray
    image_ids: np.ndarray
    trial_image: np.ndarray
    responses: np.ndarray
    behavior: np.ndarray
    eye: np.ndarray
    tiers: np.ndarray

    @property
    def n_neurons(self) -> int:
        return int(np.shape(self.responses)[1])

    @property
    def n_trials(self) -> int:
        return int(np.shape(self.responses)[0])

    def fingerprint(self) -> str:
        """md5 of every array (images, ids, trials, responses, behavior, eye, tiers): a checkpoint
        resumes only on the data it was made with."""
        md5 = hashlib.md5()
        for a in (np.asarray(self.images, np.float32), np.asarray(self.image_ids, np.int64),
                  np.asarray(self.trial_image, np.int64), np.asarray(self.responses, np.float32),
                  np.asarray(self.behavior, np.float32), np.asarray(self.eye, np.float32)):
            md5.update(np.ascontiguousarray(a).tobytes())
        md5.update("\n".join(np.asarray(self.tiers).astype(str).tolist()).encode())
        return md5.hexdigest()

    def tier(self, name: str) -> np.ndarray:
        """Trial indices (int64) of one tier."""
        return np.flatnonzero(np.asarray(self.tiers) == name)

    def validate(self) -> None:
        """Raise PredictiveDataError naming the first problem: shapes, dtypes, NaN/inf, image ids,
        trial_image out of range, unknown tiers, an empty train, validation or oracle tier."""
        def fail(message: str) -> None:
            raise PredictiveDataError(message)

        arrays = {k: np.asarray(getattr(self, k)) for k in
                  ("images", "image_ids", "trial_image", "responses", "behavior", "eye", "tiers")}
        images, responses = arrays["images"], arrays["responses"]
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            fail(f"images must have shape (n_images, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}), "
                 f"got {images.shape}")
        if len(images) == 0:
            fail("images is empty")
        if responses.ndim != 2 or responses.shape[0] == 0 or responses.shape[1] == 0:
            fail(f"responses must be a non-empty 2-D array (trials, neurons), got shape "
                 f"{responses.shape}")
        n_images, (n_trials, _) = len(images), responses.shape
        expected = {"image_ids": (n_images,), "trial_image": (n_trials,), "behavior": (n_trials, 3),
                    "eye": (n_trials, 2), "tiers": (n_trials,)}
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                fail(f"{name} has shape {arrays[name].shape}, expected {shape}")
        for name in ("images", "responses", "behavior", "eye"):
            a = arrays[name]
            if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
                fail(f"{name} must be real numbers, got dtype {a.dtype}")
            if not np.all(np.isfinite(a)):
                bad = np.argwhere(~np.isfinite(a))[0].tolist()
                fail(f"{name} contains NaN or inf (first at index {bad})")
        for name in ("image_ids", "trial_image"):
            if not np.issubdtype(arrays[name].dtype, np.integer):
                fail(f"{name} must be integers, got dtype {arrays[name].dtype}")
        if len(np.unique(arrays["image_ids"])) != n_images:
            fail("image_ids are not unique")
        ti = arrays["trial_image"]
        if ti.min() < 0 or ti.max() >= n_images:
            fail(f"trial_image out of range: values {ti.min()}..{ti.max()} for {n_images} images")
        if np.any(responses < 0):
            fail(f"responses contain negative values (min {responses.min():.3g}); the Poisson "
                 "loss needs non-negative responses")
        tiers = arrays["tiers"].astype(str)
        unknown = sorted(set(np.unique(tiers).tolist()) - set(TIERS))
        if unknown:
            fail(f"unknown tiers {unknown}; expected {TIERS}")
        for name, why in (("train", "to train on"), ("validation", "for early stopping"),
                          ("oracle", "for the test correlation")):
            if not np.any(tiers == name):
                fail(f"the {name} tier is empty: {name} trials are needed {why}")
        if np.sum(tiers == "train") < 2:
            fail("the train tier has fewer than 2 trials (BatchNorm needs batches of 2 or more)")

    @classmethod
    def from_recording(cls, image_set, scan) -> "PredictiveData":
        """Build from `recording.ImageSet` and `recording.ScanRecording` objects (image ids are
        matched to rows of `image_set.images`)."""
        ids = np.asarray(image_set.image_ids, np.int64)
        order = np.argsort(ids, kind="stable")
        pos = np.searchsorted(ids[order], np.asarray(scan.image_ids, np.int64))
        pos = np.clip(pos, 0, len(ids) - 1)
        rows = order[pos]
        if np.any(ids[rows] != scan.image_ids):
            raise PredictiveDataError(f"scan {scan.name}: trial image ids not in image set "
                                      f"{image_set.name}")
        return cls(images=np.asarray(image_set.images, np.float32), image_ids=ids,
                   trial_image=rows.astype(np.int64),
                   responses=np.asarray(scan.responses, np.float32),
                   behavior=np.asarray(scan.behavior, np.float32),
                   eye=np.asarray(scan.pupil_center, np.float32),
                   tiers=np.asarray(scan.tiers).astype(str))


__all__ = ["PredictiveData", "PredictiveDataError"]
