"""In-memory form of one recording (scan) and of the stimulus set, shared by every data source.

The simulator (`simulate.py`) and the Sensorium reader (`sensorium.py`) both return these objects;
`experiment.py` validates and inserts them. Pure numpy: never imports datajoint.

Conventions (the tables document the same units):
- images: float32, shape (n_images, 36, 64), gray levels in [0, 255] (8-bit luminance scale).
- responses: float32, shape (n_trials, n_neurons), one row per trial in the order of `trial_idx`.
  Units are those of the source (simulated spike counts; Sensorium: deconvolved calcium activity,
  arbitrary units), never negative for the simulator.
- tiers: 'train', 'validation', 'oracle' (repeated test images), 'withheld' (trials whose responses
  the data publishers withheld, e.g. Sensorium's competition test sets: imported, never used).
- behavior: float32 (n_trials, 3): pupil diameter (a.u.), its temporal derivative (a.u./s),
  treadmill running speed (cm/s).
- pupil_center: float32 (n_trials, 2): eye position (x, y) in camera pixels (a.u.).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

IMAGE_SHAPE = (36, 64)
TIERS = ("train", "validation", "oracle", "withheld")
# integer ranges of the columns the identifiers go to (experiment.py): checked before anything is written
_INT16, _INT32 = (-2 ** 15, 2 ** 15 - 1), (-2 ** 31, 2 ** 31 - 1)
ID_RANGES = {"animal_id": _INT32, "session": _INT16, "scan_idx": _INT16, "unit_ids": _INT32, "trial_idx": _INT32}
# |response| above this is not a plausible activity in any unit we import (spike counts, deconvolved
# calcium a.u.): a corrupt or mis-scaled file. float32 also stops counting integers exactly at 2^24.
MAX_ABS_RESPONSE = 1e6


class RecordingError(ValueError):
    """Malformed recording data. `source` names the file or object at fault."""

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


@dataclass
class ImageSet:
    """The stimuli shown in one or more scans, indexed by an integer image id."""

    name: str                       # e.g. 'sim-7' or 'sensorium2022'
    image_ids: np.ndarray           # int64 (n_images,), unique
    images: np.ndarray              # float32 (n_images, 36, 64), gray levels 0..255
    description: str = ""

    def validate(self) -> None:
        ids = np.asarray(self.image_ids)
        if ids.ndim != 1 or len(ids) != len(self.images):
            raise RecordingError(self.name, f"{len(ids)} image ids for {len(self.images)} images")
        if len(np.unique(ids)) != len(ids):
            raise RecordingError(self.name, "duplicate image ids")
        if self.images.shape[1:] != IMAGE_SHAPE:
            raise RecordingError(self.name, f"images have shape {self.images.shape[1:]}, expected {IMAGE_SHAPE}")
        if not np.all(np.isfinite(self.images)):
            raise RecordingError(self.name, "images contain NaN or inf")
        if self.images.size and (self.images.min() < 0 or self.images.max() > 255):
            raise RecordingError(self.name, f"gray levels span {self.images.min():.4g}..{self.images.max():.4g}, "
                                            "expected 0..255")


@dataclass
class ScanRecording:
    """One scan: a population of neurons recorded over a sequence of trials."""

    animal_id: int
    session: int
    scan_idx: int
    image_set: str                   # name of the ImageSet its image ids refer to
    source: str                      # 'simulated' or 'sensorium2022'
    unit_ids: np.ndarray             # int64 (n_neurons,), unique within the scan
    cell_positions: np.ndarray       # float32 (n_neurons, 3), cortical position x, y, z in um
    trial_idx: np.ndarray            # int64 (n_trials,), increasing, unique
    image_ids: np.ndarray            # int64 (n_trials,), the image shown in each trial
    tiers: np.ndarray                # str (n_trials,), values in TIERS
    responses: np.ndarray            # float32 (n_trials, n_neurons)
    behavior: np.ndarray             # float32 (n_trials, 3): pupil, d pupil / dt, running speed
    pupil_center: np.ndarray         # float32 (n_trials, 2): eye position x, y
    notes: list = field(default_factory=list)   # problems detected but tolerated (e.g. zero behavior)
    ground_truth: Optional[dict] = None          # simulator only: true reliability, receptive fields

    @property
    def name(self) -> str:
        return f"{self.animal_id}-{self.session}-{self.scan_idx}"

    @property
    def n_neurons(self) -> int:
        return int(self.responses.shape[1])

    @property
    def n_trials(self) -> int:
        return int(self.responses.shape[0])

    def validate(self, image_ids: Optional[np.ndarray] = None) -> None:
        """Raise RecordingError naming the first inconsistency; `image_ids`: the known image ids."""
        src = f"scan {self.name}"
        n_t, n_n = self.responses.shape if self.responses.ndim == 2 else (None, None)
        if n_t is None:
            raise RecordingError(src, f"responses must be 2-D (trials x neurons), got shape {self.responses.shape}")
        checks = {
            "unit_ids": (self.unit_ids, (n_n,)),
            "cell_positions": (self.cell_positions, (n_n, 3)),
            "trial_idx": (self.trial_idx, (n_t,)),
            "image_ids": (self.image_ids, (n_t,)),
            "tiers": (self.tiers, (n_t,)),
            "behavior": (self.behavior, (n_t, 3)),
            "pupil_center": (self.pupil_center, (n_t, 2)),
        }
        for name, (arr, shape) in checks.items():
            if np.shape(arr) != shape:
                raise RecordingError(src, f"{name} has shape {np.shape(arr)}, expected {shape}")
        for name in ("responses", "behavior", "pupil_center", "cell_positions"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise RecordingError(src, f"{name} contains NaN or inf")
        for name in (*ID_RANGES, "image_ids"):
            values = np.asarray(getattr(self, name))
            exact = values.dtype.kind in "iu" or (
                values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values))
                and (not values.size or np.abs(values).max() <= 2 ** (np.finfo(values.dtype).nmant + 1)))
            if not exact:
                raise RecordingError(src, f"{name} holds values of type {values.dtype} that are not exact integers "
                                          "(fractions, or floats beyond their exact integer range): ids must "
                                          "come through unchanged")
        for name, (low, high) in ID_RANGES.items():
            values = np.asarray(getattr(self, name))
            if values.size and (values.min() < low or values.max() > high):
                bad = values.max() if values.max() > high else values.min()
                raise RecordingError(src, f"{name} value {int(bad)} is outside the range {low}..{high} of its "
                                          "column: not an identifier this pipeline can store")
        if self.responses.size and np.abs(self.responses).max() > MAX_ABS_RESPONSE:
            row, col = np.unravel_index(np.abs(self.responses).argmax(), self.responses.shape)
            raise RecordingError(src, f"response {self.responses[row, col]:.4g} (trial row {row}, unit "
                                      f"{self.unit_ids[col]}) exceeds {MAX_ABS_RESPONSE:g} in magnitude: a corrupt or "
                                      "mis-scaled file")
        if len(np.unique(self.unit_ids)) != n_n:
            raise RecordingError(src, "duplicate unit ids")
        if np.any(np.diff(self.trial_idx) <= 0):
            raise RecordingError(src, "trial_idx must be strictly increasing")
        bad = sorted(set(np.unique(self.tiers).tolist()) - set(TIERS))
        if bad:
            raise RecordingError(src, f"unknown tiers {bad}; expected {TIERS}")
        if image_ids is not None:
            missing = np.setdiff1d(self.image_ids, image_ids)
            if len(missing):
                raise RecordingError(src, f"{len(missing)} trial image ids not in the image set, e.g. {missing[:5].tolist()}")
        oracle = self.tiers == "oracle"
        if oracle.any():
            ids, counts = np.unique(self.image_ids[oracle], return_counts=True)
            if counts.min() < 2:
                raise RecordingError(src, f"oracle image {ids[counts.argmin()]} has no repeats (shown once)")
            # an oracle image must not also be a training image
            leak = np.intersect1d(ids, self.image_ids[~oracle & (self.tiers != "withheld")])
            if len(leak):
                raise RecordingError(src, f"oracle images also shown in train/validation trials, e.g. {leak[:5].tolist()}")
