"""Reader and validator of one Sensorium 2022 static scan (a folder, or its published .zip).

The published scans (gin.g-node.org/cajal/Sensorium2022) use the neuralpredictors FileTreeDataset
layout (`neuralpredictors/data/datasets/base.py`, FileTreeDatasetBase; `sinzlab/sensorium`,
notebooks/dataset_tutorial/README.md):

    static<animal>-<session>-<scan>-GrayImageNet-<hash>/
        data/images/<i>.npy         (1, 144, 256) gray levels 0..255: the image shown in trial file i
        data/responses/<i>.npy      (n_neurons,) deconvolved calcium activity (a.u.)
        data/behavior/<i>.npy       (3,) pupil dilation, its derivative, running speed
        data/pupil_center/<i>.npy   (2,) eye position x, y
        meta/neurons/               unit_ids, animal_ids, sessions, scan_idx (one entry per unit),
                                    cell_motor_coordinates (n_neurons, 3) in um, area, layer
        meta/trials/                tiers, frame_image_id, trial_idx, ... (one entry per trial file)
        meta/statistics/            normalisation statistics (not used here)

Row i of every meta/trials array describes data/*/<i>.npy; the files are in random order and
`trial_idx` gives the presentation order. Tiers are 'train', 'validation', 'test' (100 images shown
~10 times each) and, in the two competition scans, 'final_test'. The competition scans publish the
test and final_test responses as zeros (and, for Sensorium, all behavior and eye positions as
zeros) and hash their trial_idx; such withheld data is imported and reported in
ScanRecording.notes, never silently used.

Everything is read with np.load(allow_pickle=False), zip members through memory (no extraction).

Hostile or damaged input is refused before it costs memory or reaches the database: a file (or zip
member) whose declared size or .npy header says it holds more than MAX_FILE_BYTES; a .npy header with
a negative dimension, or whose data size differs from what the file (or member) holds after it (a
sparse or padded file); a scan whose files together exceed MAX_SCAN_BYTES, or whose trials x units
exceed MAX_RESPONSE_VALUES (checked before any trial file is read); ids (unit, animal, session, scan,
trial, image) that do not convert exactly to integers (uint64 beyond int64, floats beyond their exact
integer range, fractions); a symbolic link
(file or folder) that leads outside the scan folder, and any symlink member of a zip; images of a
resolution other than the scan's first image; an image whose gray levels stay within 0..1 among
0..255 images (or a scan of 0..1 images: multiply by 255 first); responses beyond
recording.MAX_ABS_RESPONSE; identifiers beyond their columns' integer range (recording.ID_RANGES).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .recording import IMAGE_SHAPE, MAX_ABS_RESPONSE, ImageSet, RecordingError, ScanRecording

NAME = "sensorium2022"   # the ImageSet name and the ScanRecording source
DATA_KINDS = ("images", "responses", "behavior", "pupil_center")
TIER_MAP = {"train": "train", "validation": "validation", "test": "oracle", "final_test": "oracle"}
_TEST_TIERS = ("test", "final_test")
_FOLDER_NAME = re.compile(r"static(\d+)-(\d+)-(\d+)-")
_TRIAL_FILE = re.compile(r"\d+\.npy")
_IMAGES_LAYOUT = "expected (1, 144, 256) or (144, 256) (a multiple of 36x64, block-averaged to 36x64)"
# No file of a scan comes near this (an image is 144x256 float64 = 0.3 MB; responses of 10^4 neurons,
# 80 kB; meta arrays of 10^5 trials, < 1 MB): larger means damaged or hostile input.
MAX_FILE_BYTES = 64 * 2 ** 20
# What one scan may hold in memory, checked from meta/neurons/unit_ids.npy and the trial file count
# before any trial file is read: trials x units responses (float32). The published scans hold about
# 6000 x 8000 = 5e7; 2.5e8 values are 1 GB.
MAX_RESPONSE_VALUES = 250_000_000
# The files of one scan together (their sizes on disk, or the zip's declared sizes): the published
# scans are about 1-2 GB unpacked.
MAX_SCAN_BYTES = 16 * 2 ** 30


class SensoriumFormatError(RecordingError):
    """A Sensorium scan that cannot be imported. `source` is the file at fault, as a path inside the
    scan folder or zip (e.g. 'data/responses/17.npy'), or the given path itself."""


class _ScanFiles:
    """Read-only access to the files of one scan, by path relative to the scan root
    ('meta/trials/tiers.npy'), whether the scan is a folder or a zip archive."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: Optional[zipfile.ZipFile] = None
        if path.is_dir():
            self.folder_name = path.name
            self._check_links()
            self._check_total(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()), str(path))
            return
        if not path.exists():
            raise SensoriumFormatError(str(path), "no such folder or file")
        if not (path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))):
            raise SensoriumFormatError(str(path), "not a folder or a .zip archive of a Sensorium scan")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise SensoriumFormatError(str(path), f"corrupt or unreadable zip archive ({e})") from e
        self._index_zip()

    @staticmethod
    def _check_total(nbytes: int, source: str) -> None:
        if nbytes > MAX_SCAN_BYTES:
            raise SensoriumFormatError(source, f"its files hold {nbytes / 2 ** 30:.1f} GiB (uncompressed), more than "
                                               f"any scan ({MAX_SCAN_BYTES // 2 ** 30} GiB): damaged or hostile input")

    def size(self, rel: str) -> int:
        """The size in bytes of a file (a zip member: its declared uncompressed size)."""
        if self._zip is not None:
            return self._zip.getinfo(self._members[rel]).file_size
        return (self.path / rel).stat().st_size

    def _check_links(self) -> None:
        """Refuse a symbolic link (to a file or a folder) that leads outside the scan folder."""
        root = self.path.resolve()
        for folder, dirs, names in os.walk(self.path):
            for name in dirs + names:
                entry = Path(folder) / name
                if entry.is_symlink():
                    target = entry.resolve()
                    if target != root and root not in target.parents:
                        raise SensoriumFormatError(
                            str(entry.relative_to(self.path)),
                            f"is a symbolic link to {target}, outside the scan folder: copy the data into the "
                            "folder (a scan must be self-contained)")

    def _index_zip(self) -> None:
        """Map the zip members to scan-relative paths. The published zips hold the scan folder as
        their only top-level entry; a zip of the folder's content (data/, meta/ at its root) works too."""
        names = [n for n in self._zip.namelist() if not n.startswith("__MACOSX/")]
        for info in self._zip.infolist():
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SensoriumFormatError(info.filename, "is a symbolic link inside the zip: a scan archive must "
                                                          "hold the files themselves")
            if info.file_size > MAX_FILE_BYTES:
                raise SensoriumFormatError(info.filename, f"declares {info.file_size / 2 ** 20:.0f} MiB uncompressed, "
                                                          f"more than any scan file ({MAX_FILE_BYTES // 2 ** 20} MiB): "
                                                          "a damaged or hostile archive")
        self._check_total(sum(info.file_size for info in self._zip.infolist()), str(self.path))
        if any(n.startswith(("data/", "meta/")) for n in names):
            prefix, self.folder_name = "", self.path.stem
        else:
            tops = sorted({n.split("/", 1)[0] for n in names if "/" in n})
            if len(tops) != 1:
                raise SensoriumFormatError(
                    str(self.path), f"expected the scan folder (holding data/ and meta/) as the only "
                                    f"top-level entry, found {tops[:5] or 'no folder'}")
            prefix, self.folder_name = tops[0] + "/", tops[0]
        self._members: dict[str, str] = {}          # relative path -> member name
        self._folders: dict[str, list[str]] = {}    # relative folder -> names of the files in it
        for name in names:
            if not name.startswith(prefix) or name == prefix:
                continue
            parts = name[len(prefix):].rstrip("/").split("/")
            # register every enclosing folder (and the entry itself when it is a folder entry)
            for depth in range(1, len(parts) + name.endswith("/")):
                self._folders.setdefault("/".join(parts[:depth]), [])
            if not name.endswith("/"):
                self._members["/".join(parts)] = name
                self._folders.setdefault("/".join(parts[:-1]), []).append(parts[-1])

    def __enter__(self) -> "_ScanFiles":
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()

    def files(self, folder: str) -> Optional[list[str]]:
        """Names of the files directly in `folder`, or None if there is no such folder."""
        if self._zip is not None:
            return self._folders.get(folder)
        full = self.path / folder
        return [p.name for p in full.iterdir() if p.is_file()] if full.is_dir() else None

    def has(self, rel: str) -> bool:
        return rel in self._members if self._zip is not None else (self.path / rel).is_file()

    def load(self, rel: str) -> np.ndarray:
        if not self.has(rel):
            raise SensoriumFormatError(rel, "file missing")
        try:
            with (open(self.path / rel, "rb") if self._zip is None else self._zip.open(self._members[rel])) as f:
                return _read_npy(f, rel, self.size(rel))
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise SensoriumFormatError(rel, f"cannot be read as a .npy array ({type(e).__name__}: {e})") from e


def _read_npy(f, rel: str, file_size: int | None = None) -> np.ndarray:
    """One .npy array from an open binary stream, its size checked from the header before any data
    is read: every dimension a whole number >= 0, at most MAX_FILE_BYTES, and exactly what the file
    holds after its header (`file_size`: the file's size on disk or the zip member's declared size;
    a sparse or padded file is refused, not read). Object arrays (pickles) are refused."""
    head = f.read(6)
    if head[:2] == b"PK":
        raise SensoriumFormatError(rel, "is an .npz archive, expected a single .npy array")
    if head != b"\x93NUMPY":
        raise SensoriumFormatError(rel, "cannot be read as a .npy array (no .npy header)")
    major, _minor = f.read(2)
    read_header = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}.get(major)
    if read_header is None:
        raise SensoriumFormatError(rel, f"cannot be read as a .npy array (format version {major})")
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise SensoriumFormatError(rel, "holds Python objects (a pickle), expected numbers or strings")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise SensoriumFormatError(rel, f"its header declares shape {shape}: dimensions must be whole numbers >= 0")
    count = math.prod(shape)                    # Python integers: no overflow
    nbytes = count * dtype.itemsize
    if nbytes > MAX_FILE_BYTES:
        raise SensoriumFormatError(rel, f"its header declares shape {shape} of {dtype} ({nbytes / 2 ** 20:.0f} MiB), "
                                        f"more than any scan file ({MAX_FILE_BYTES // 2 ** 20} MiB)")
    if file_size is not None:
        data_bytes = file_size - f.tell()
        if data_bytes != nbytes:
            raise SensoriumFormatError(rel, f"its header declares shape {shape} of {dtype} ({nbytes} bytes), but the "
                                            f"file holds {data_bytes} bytes after its header: damaged or hostile file")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise SensoriumFormatError(rel, f"truncated: {len(data)} of {nbytes} data bytes")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()


def read_sensorium(path: str | Path,
                   progress: Optional[Callable[[int, int], None]] = None) -> tuple[ImageSet, ScanRecording]:
    """Read and validate one Sensorium 2022 static scan: a scan folder or its .zip.

    Returns the ImageSet 'sensorium2022' holding the scan's distinct images (keyed by
    frame_image_id, 4x4 block means of the 144x256 images: float32 (n, 36, 64), 0..255) and the
    ScanRecording with its trials sorted by trial_idx and the tiers mapped to ours (test and
    final_test -> 'oracle', or 'withheld' where their responses are all zero).
    `progress(done, total)` is called after each trial file is read. Raises SensoriumFormatError
    naming the offending file for any malformed or inconsistent input.
    """
    path = Path(path)
    with _ScanFiles(path) as files:
        if files.files("data") is None and files.files("meta") is None:
            raise SensoriumFormatError(str(path), "holds no data/ or meta/ folder: not a Sensorium scan")
        animal_id, session, scan_idx, unit_ids, positions = _read_neurons(files)
        n_trials = _count_trial_files(files)
        if n_trials * len(unit_ids) > MAX_RESPONSE_VALUES:
            raise SensoriumFormatError(str(path), f"{n_trials} trials x {len(unit_ids)} units = "
                                                  f"{n_trials * len(unit_ids):.3g} responses, more than one scan may "
                                                  f"hold ({MAX_RESPONSE_VALUES:.3g}): damaged or hostile input")
        tiers, frame_image_ids, trial_idx, notes = _read_trials(files, n_trials)
        order = np.argsort(trial_idx, kind="stable")     # row r of the result is trial file order[r]
        responses, behavior, pupil_center, has_response, images = _read_trial_files(
            files, order, len(unit_ids), frame_image_ids, progress)

    src_tiers, image_ids = tiers[order], frame_image_ids[order]
    our_tiers = _map_tiers(src_tiers, image_ids, order, has_response, notes)
    for name, values, lost in (("behavior", behavior, "pupil dilation, its derivative and running speed are"),
                               ("pupil_center", pupil_center, "the eye position is")):
        if not values.any():
            notes.append(f"{name} (data/{name}) is all zero in every trial (withheld by the publishers): "
                         f"{lost} unavailable for this scan")

    image_set = ImageSet(
        name=NAME,
        image_ids=np.array(sorted(images), dtype=np.int64),
        images=np.stack([images[i] for i in sorted(images)]),
        description="Sensorium 2022 gray ImageNet stimuli (keyed by frame_image_id), 144x256 block-averaged "
                    "to 36x64")
    recording = ScanRecording(
        animal_id=animal_id, session=session, scan_idx=scan_idx, image_set=NAME, source=NAME,
        unit_ids=unit_ids, cell_positions=positions, trial_idx=trial_idx[order], image_ids=image_ids,
        tiers=our_tiers, responses=responses, behavior=behavior, pupil_center=pupil_center, notes=notes)
    try:
        image_set.validate()
        recording.validate(image_set.image_ids)
    except RecordingError as e:   # the checks above should have caught it; keep the error type uniform
        raise SensoriumFormatError(str(path), f"inconsistent scan: {e}") from e
    return image_set, recording


# ------------------------------------------------------------------------------------- meta/neurons

def _read_neurons(files: _ScanFiles) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """The scan key (constant over units, agreeing with the folder name), unit ids and positions."""
    unit_ids = _integers(files.load("meta/neurons/unit_ids.npy"), "meta/neurons/unit_ids.npy")
    n = len(unit_ids)
    if n == 0:
        raise SensoriumFormatError("meta/neurons/unit_ids.npy", "no units")
    ids, counts = np.unique(unit_ids, return_counts=True)
    if counts.max() > 1:
        raise SensoriumFormatError("meta/neurons/unit_ids.npy",
                                   f"duplicate unit ids, e.g. {ids[counts > 1][:5].tolist()}")
    key = []
    for name, label in (("animal_ids", "animal id"), ("sessions", "session"), ("scan_idx", "scan_idx")):
        rel = f"meta/neurons/{name}.npy"
        values = _integers(files.load(rel), rel, n, "meta/neurons/unit_ids.npy")
        distinct = np.unique(values)
        if len(distinct) != 1:
            raise SensoriumFormatError(rel, f"one {label} expected for all units of the scan, found "
                                            f"{len(distinct)} distinct values, e.g. {distinct[:5].tolist()}")
        key.append(int(distinct[0]))
    named = _FOLDER_NAME.match(files.folder_name)
    if named:
        for name, label, value, in_name in zip(("animal_ids", "sessions", "scan_idx"),
                                               ("animal id", "session", "scan_idx"), key, named.groups()):
            if value != int(in_name):
                raise SensoriumFormatError(f"meta/neurons/{name}.npy",
                                           f"{label} {value} contradicts the folder name "
                                           f"'{files.folder_name}' ({label} {in_name})")
    rel = "meta/neurons/cell_motor_coordinates.npy"
    positions = _numeric(files.load(rel), rel)
    if positions.shape != (n, 3):
        raise SensoriumFormatError(rel, f"shape {positions.shape}, expected ({n}, 3) "
                                        f"(x, y, z of each unit in meta/neurons/unit_ids.npy)")
    _finite(positions, rel)
    return key[0], key[1], key[2], unit_ids, positions.astype(np.float32)


# -------------------------------------------------------------------------- trial files, meta/trials

def _count_trial_files(files: _ScanFiles) -> int:
    """The number of trials: each data folder must hold exactly 0.npy .. N-1.npy (hidden files aside)."""
    listings = {}
    for kind in DATA_KINDS:
        names = files.files(f"data/{kind}")
        if names is None:
            raise SensoriumFormatError(f"data/{kind}", "folder missing")
        listings[kind] = [name for name in names if not name.startswith(".")]
    n = len(listings["images"])
    if n == 0:
        raise SensoriumFormatError("data/images", "holds no trial files")
    for kind, names in listings.items():
        if len(names) != n:
            raise SensoriumFormatError(f"data/{kind}", f"{len(names)} files, but data/images holds {n} "
                                                       f"(one file per trial expected in each data folder)")
        odd = sorted(name for name in names if not _TRIAL_FILE.fullmatch(name))
        if odd:
            raise SensoriumFormatError(f"data/{kind}/{odd[0]}", "unexpected file: trial files are named <i>.npy")
        missing = sorted(set(range(n)) - {int(name[:-4]) for name in names})
        if missing:
            raise SensoriumFormatError(f"data/{kind}/{missing[0]}.npy",
                                       f"file missing: the {n} trial files must be named "
                                       f"0.npy..{n - 1}.npy without gaps")
    return n


def _read_trials(files: _ScanFiles, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """tiers (source names), frame_image_id and trial_idx, one entry per trial file; and notes."""
    notes: list[str] = []
    arrays = {}
    for name in ("tiers", "frame_image_id", "trial_idx"):
        rel = f"meta/trials/{name}.npy"
        arr = files.load(rel)
        if arr.shape != (n,):
            raise SensoriumFormatError(rel, f"shape {arr.shape}, expected ({n},): one entry per trial "
                                            f"file (data/images holds {n} files)")
        arrays[name] = arr

    rel = "meta/trials/tiers.npy"
    if arrays["tiers"].dtype.kind not in "US":
        raise SensoriumFormatError(rel, f"dtype {arrays['tiers'].dtype}, expected strings")
    tiers = np.char.strip(arrays["tiers"].astype(str))
    unknown = sorted(set(tiers.tolist()) - set(TIER_MAP))
    if unknown:
        raise SensoriumFormatError(rel, f"unknown tier values {unknown}; expected {sorted(TIER_MAP)}")

    frame_image_ids = _integers(arrays["frame_image_id"], "meta/trials/frame_image_id.npy")

    rel = "meta/trials/trial_idx.npy"
    raw = arrays["trial_idx"]
    hashed = raw.dtype.kind in "US"
    trial_idx = np.arange(n, dtype=np.int64) if hashed else _integers(raw, rel)
    values, counts = np.unique(raw if hashed else trial_idx, return_counts=True)
    if counts.max() > 1:
        raise SensoriumFormatError(rel, f"duplicate trial_idx values, e.g. {values[counts > 1][:5].tolist()}")
    if hashed:
        notes.append(f"meta/trials/trial_idx.npy holds hashed (non-numeric) trial indices (presentation "
                     f"order withheld by the publishers): trials numbered 0..{n - 1} in file order; "
                     f"their true order is unknown")
    return tiers, frame_image_ids, trial_idx, notes


# ------------------------------------------------------------------------------------------- data/*

def _read_trial_files(files: _ScanFiles, order: np.ndarray, n_neurons: int, frame_image_ids: np.ndarray,
                      progress: Optional[Callable[[int, int], None]]):
    """Load every trial file, checking each as it comes, into rows sorted by trial_idx.

    Returns responses, behavior, pupil_center (rows in trial_idx order), has_response (whether a
    row has any non-zero response) and {image id: 36x64 image}. An image id met twice must come with
    identical pixels (compared through a digest of the full-resolution image)."""
    n = len(order)
    row_of_file = np.empty(n, dtype=np.int64)
    row_of_file[order] = np.arange(n)
    responses = np.empty((n, n_neurons), dtype=np.float32)
    behavior = np.empty((n, 3), dtype=np.float32)
    pupil_center = np.empty((n, 2), dtype=np.float32)
    has_response = np.empty(n, dtype=bool)
    images: dict[int, np.ndarray] = {}
    first_seen: dict[int, tuple[bytes, int]] = {}      # image id -> (pixel digest, trial file)
    resolution = None                                   # (shape, file) of the first image
    peak = np.empty(n, dtype=np.float32)                # brightest gray level of each trial's image
    for i in range(n):
        row = row_of_file[i]
        rel = f"data/responses/{i}.npy"
        responses[row] = _trial_vector(files, rel, n_neurons, "one value per unit in meta/neurons/unit_ids.npy")
        if np.abs(responses[row]).max(initial=0) > MAX_ABS_RESPONSE:
            raise SensoriumFormatError(rel, f"a response of {np.abs(responses[row]).max():.4g} exceeds "
                                            f"{MAX_ABS_RESPONSE:g} in magnitude: a corrupt or mis-scaled file")
        has_response[row] = responses[row].any()
        behavior[row] = _trial_vector(files, f"data/behavior/{i}.npy", 3,
                                      "pupil dilation, its derivative, running speed")
        pupil_center[row] = _trial_vector(files, f"data/pupil_center/{i}.npy", 2, "eye position x, y")

        rel = f"data/images/{i}.npy"
        image = _full_image(files.load(rel), rel)
        if resolution is None:
            resolution = (image.shape, rel)
        elif image.shape != resolution[0]:
            raise SensoriumFormatError(rel, f"image of {image.shape[0]}x{image.shape[1]} pixels, but {resolution[1]} "
                                            f"has {resolution[0][0]}x{resolution[0][1]}: all images of a scan must "
                                            "share one resolution")
        peak[i] = image.max()
        image_id = int(frame_image_ids[i])
        digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
        if image_id not in first_seen:
            first_seen[image_id] = (digest, i)
            images[image_id] = block_average(image)
        elif first_seen[image_id][0] != digest:
            raise SensoriumFormatError(rel, f"image id {image_id} (row {i} of meta/trials/frame_image_id.npy) "
                                            f"has different pixels than data/images/{first_seen[image_id][1]}.npy, "
                                            f"which shows the same image id")
        if progress is not None:
            progress(i + 1, n)
    _check_gray_scale(peak)
    return responses, behavior, pupil_center, has_response, images


def _check_gray_scale(peak: np.ndarray) -> None:
    """Images must use 0..255: refuse a scan of 0..1 images, and a 0..1 image among 0..255 ones
    (peak: the brightest gray level of each trial file's image; an all-black image passes)."""
    lit = peak > 0
    if not lit.any():
        return
    if np.median(peak[lit]) <= 1.0:
        raise SensoriumFormatError("data/images", f"gray levels stay within 0..{peak.max():.3g} in every image: "
                                                  "they look scaled to 0..1; expected 0..255 (multiply by 255)")
    dim = np.flatnonzero(lit & (peak <= 1.0))
    if len(dim):
        raise SensoriumFormatError(f"data/images/{dim[0]}.npy",
                                   f"gray levels within 0..{peak[dim[0]]:.3g} while the scan's other images span "
                                   f"0..255 (median brightest level {np.median(peak[lit]):.0f}): this image looks "
                                   f"scaled to 0..1 ({len(dim)} such images)")


def _trial_vector(files: _ScanFiles, rel: str, length: int, meaning: str) -> np.ndarray:
    """A per-trial vector stored as (length,) (or (1, length))."""
    arr = _numeric(files.load(rel), rel)
    if arr.shape not in ((length,), (1, length)):
        raise SensoriumFormatError(rel, f"shape {arr.shape}, expected ({length},) ({meaning})")
    _finite(arr, rel)
    return arr.reshape(length)


def _full_image(arr: np.ndarray, rel: str) -> np.ndarray:
    """The (H, W) float32 image of a trial file: shape (1, H, W) or (H, W), H, W multiples of 36, 64."""
    image = _numeric(arr, rel)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2 or image.size == 0 or image.shape[0] % IMAGE_SHAPE[0] or image.shape[1] % IMAGE_SHAPE[1]:
        raise SensoriumFormatError(rel, f"shape {arr.shape}, {_IMAGES_LAYOUT}")
    _finite(image, rel)
    low, high = image.min(), image.max()
    if low < 0 or high > 255:
        raise SensoriumFormatError(rel, f"gray levels span {low}..{high}, expected 0..255")
    return np.ascontiguousarray(image, dtype=np.float32)


def block_average(image: np.ndarray) -> np.ndarray:
    """Area-average an (H, W) image whose sides are multiples of 36 and 64 down to (36, 64) float32:
    each output pixel is the exact mean of its (H/36) x (W/64) block (4x4 for Sensorium's 144x256)."""
    (h, w), (out_h, out_w) = image.shape, IMAGE_SHAPE
    blocks = image.reshape(out_h, h // out_h, out_w, w // out_w)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


# ------------------------------------------------------------------------------------------- tiers

def _map_tiers(src_tiers: np.ndarray, image_ids: np.ndarray, file_of_row: np.ndarray,
               has_response: np.ndarray, notes: list[str]) -> np.ndarray:
    """Our tier per row (see TIER_MAP); a source tier whose responses are all zero becomes
    'withheld' (noted). Test images kept as 'oracle' must be repeated and never shown in train or
    validation trials."""
    tiers = np.empty(len(src_tiers), dtype="<U10")
    withheld = []
    for source, ours in TIER_MAP.items():
        rows = src_tiers == source
        if not rows.any():
            continue
        if has_response[rows].any():
            tiers[rows] = ours
        else:
            tiers[rows] = "withheld"
            withheld.append((source, int(rows.sum())))
    for source, count in withheld:
        no_oracle = source in _TEST_TIERS and not (tiers == "oracle").any()
        notes.append(f"responses of the '{source}' tier are all zero (withheld by the publishers): "
                     f"{count} trials imported as 'withheld'"
                     + ("; this scan has no oracle responses" if no_oracle else ""))

    shown = image_ids[(tiers == "train") | (tiers == "validation")]
    for source in _TEST_TIERS:
        rows = (src_tiers == source) & (tiers == "oracle")
        ids, counts = np.unique(image_ids[rows], return_counts=True)
        if len(ids) and counts.min() < 2:
            once = ids[counts < 2]
            row = np.flatnonzero(rows & (image_ids == once[0]))[0]
            raise SensoriumFormatError(
                "meta/trials/frame_image_id.npy",
                f"{len(once)} '{source}' image(s) shown only once, e.g. image id {once[0]} "
                f"(trial file data/images/{file_of_row[row]}.npy); test images form the oracle set and must be repeated")
        leaked = np.intersect1d(ids, shown)
        if len(leaked):
            raise SensoriumFormatError(
                "meta/trials/frame_image_id.npy",
                f"{len(leaked)} '{source}' image(s) also shown in train/validation trials, "
                f"e.g. image id {leaked[0]}")
    return tiers


# --------------------------------------------------------------------------------------- utilities

def _numeric(arr: np.ndarray, rel: str) -> np.ndarray:
    if arr.dtype.kind not in "iuf":
        raise SensoriumFormatError(rel, f"dtype {arr.dtype}, expected numbers")
    return arr


def _finite(arr: np.ndarray, rel: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise SensoriumFormatError(rel, f"contains NaN or inf ({n_nan} NaN, {n_inf} inf values)")


def _integers(arr: np.ndarray, rel: str, length: Optional[int] = None, length_of: str = "") -> np.ndarray:
    """A 1-D int64 array from integers (or floats holding whole numbers), optionally of a given length."""
    if arr.ndim != 1 or (length is not None and len(arr) != length):
        expected = f"({length},), one entry per entry of {length_of}" if length is not None else "one dimension"
        raise SensoriumFormatError(rel, f"shape {arr.shape}, expected {expected}")
    _numeric(arr, rel)
    if arr.dtype.kind == "f":
        _finite(arr, rel)
        if np.any(arr != np.round(arr)):
            raise SensoriumFormatError(rel, "holds non-integer values, expected integer ids")
        exact = 2 ** (np.finfo(arr.dtype).nmant + 1)     # beyond it a float does not hold one exact integer
        if arr.size and np.abs(arr).max() > exact:
            raise SensoriumFormatError(rel, f"holds the float {np.abs(arr).max():.6g}, beyond {exact} where {arr.dtype} "
                                            "stops counting integers exactly: store ids as integers")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise SensoriumFormatError(rel, f"holds the id {int(arr.max())}, beyond the int64 range: not an id this "
                                        "pipeline can store")
    out = arr.astype(np.int64)
    if not np.array_equal(out, arr):                # every value must come through exactly
        bad = int(np.flatnonzero(out != arr)[0])
        raise SensoriumFormatError(rel, f"entry {bad} ({arr[bad]!r}) does not convert exactly to an integer id")
    return out
