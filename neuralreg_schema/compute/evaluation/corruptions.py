"""Common corruptions (Hendrycks & Dietterich 2019, CIFAR-10-C) in grayscale: the reader and validator
of a corruption set in the published layout, and the accuracy of a classifier on it. Pure numpy /
torch; never imports datajoint.

The published layout (https://zenodo.org/record/2535967, CIFAR-10-C.tar): one folder holding
`labels.npy` and one `<corruption>.npy` per corruption, each (5 n, 32, 32, 3) uint8 RGB: the n
test images at severity 1, then all of them at severity 2, ... 5 (severity-major; n = 10 000, the
CIFAR-10 test set in its order); `labels.npy` (5 n,) integers, the n test labels repeated once per
severity. The 19 corruptions: the 15 of the benchmark (CORRUPTIONS[:15]) and the 4 extra ones
(speckle_noise, gaussian_blur, spatter, saturate).

`read_corruption_set(folder, corruptions)` validates everything before any pixel is converted and
refuses, with a CorruptionSetError naming the file and the problem: a missing folder or
`labels.npy`, a missing corruption (of those asked for; by default all 19), an unknown
`<name>.npy` in the folder (a misspelt or foreign file), a file that is not a .npy, a pickled or
non-uint8 image array, a shape other than (5 n, 32, 32, 3), a header whose size disagrees with the
file (truncated or padded), non-integer labels, labels outside 0 .. classes - 1, labels that differ
between severities, and image files whose length disagrees with the labels. It then converts each
file to grey exactly as the classifiers' data path does (compute/classifier/data.rgb_to_gray: the
integer BT.601 luma, rounded half up) and returns uint8 (5, n, 32, 32) per corruption.

`corruption_accuracy(net, images, labels)` scores a classifier on one corruption, per severity, with
the images normalised exactly as the clean test images are (uint8 / 255: noise.noise_accuracy at sd 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classifier.data import rgb_to_gray

BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = BENCHMARK + EXTRA          # the 19 published files
SEVERITIES = 5
LABELS = "labels.npy"
MAX_FILE_BYTES = 1 << 30                 # a published file is 153.6 MB; anything beyond 1 GiB is refused unread


class CorruptionSetError(ValueError):
    """A corruption-set folder is not in the published layout (the message names the file and the problem)."""


@dataclass
class CorruptionSet:
    """A validated corruption set: grey uint8 images (5, n, H, W) per corruption, labels (n,) int64."""
    folder: str
    labels: np.ndarray
    images: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(len(self.labels))


def _header(path: Path) -> tuple[tuple, np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, from its header alone; refuses a file
    that is not a .npy, a pickled array and a size that disagrees with the header."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CorruptionSetError(f"{path}: {size} bytes, beyond any file of the published layout ({MAX_FILE_BYTES})")
    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise CorruptionSetError(f"{path}: not a readable .npy file ({e})") from None
    if dtype.hasobject:
        raise CorruptionSetError(f"{path}: holds Python objects (a pickled array); the layout has plain arrays")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise CorruptionSetError(f"{path}: {what}: header {shape} {dtype} needs {expected} bytes, the file has {size}")
    return tuple(shape), dtype, bool(fortran), offset


def validate_folder(folder, corruptions=None, *, n_classes: int = 10,
                    image_shape: tuple = (32, 32, 3)) -> tuple[np.ndarray, dict[str, Path]]:
    """Check a folder against the published layout without reading any image (see the module
    docstring); returns (labels of one severity, int64 (n,), {corruption: path}). corruptions: the
    names required (default: all 19 published); any other `<name>.npy` of a published name is left
    alone, a `.npy` of another name is refused."""
    folder = Path(folder)
    wanted = tuple(CORRUPTIONS if corruptions is None else corruptions)
    unknown = sorted(set(wanted) - set(CORRUPTIONS))
    if not wanted or unknown:
        raise CorruptionSetError(f"unknown corruption names {unknown or '(none given)'}; the published ones: "
                                 f"{', '.join(CORRUPTIONS)}")
    if len(set(wanted)) != len(wanted):
        raise CorruptionSetError(f"corruption names repeated: {list(wanted)}")
    if not folder.is_dir():
        raise CorruptionSetError(f"{folder}: no such folder (expected CIFAR-10-C's layout: labels.npy and "
                                 "<corruption>.npy files)")
    present = {p.stem: p for p in folder.iterdir() if p.suffix == ".npy" and p.stem != "labels"}
    foreign = sorted(set(present) - set(CORRUPTIONS))
    if foreign:
        raise CorruptionSetError(f"{folder}: files of no published corruption: "
                                 f"{', '.join(n + '.npy' for n in foreign)}; the published names: {', '.join(CORRUPTIONS)}")
    missing = [n for n in wanted if n not in present]
    if missing:
        raise CorruptionSetError(f"{folder}: missing {', '.join(n + '.npy' for n in missing)}")
    labels_path = folder / LABELS
    if not labels_path.is_file():
        raise CorruptionSetError(f"{labels_path}: missing (the labels of every severity, (5 n,) integers)")
    shape, dtype, _, _ = _header(labels_path)
    if len(shape) != 1 or shape[0] == 0 or shape[0] % SEVERITIES:
        raise CorruptionSetError(f"{labels_path}: shape {shape}; expected (5 n,): n labels per severity, 5 severities")
    if dtype.kind not in "iu":
        raise CorruptionSetError(f"{labels_path}: dtype {dtype}; expected integer labels")
    labels = np.load(labels_path, allow_pickle=False).astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise CorruptionSetError(f"{labels_path}: labels span {labels.min()}..{labels.max()}, outside 0..{n_classes - 1}")
    n = len(labels) // SEVERITIES
    per_severity = labels.reshape(SEVERITIES, n)
    differ = [s + 1 for s in range(1, SEVERITIES) if not np.array_equal(per_severity[s], per_severity[0])]
    if differ:
        raise CorruptionSetError(f"{labels_path}: the labels of severities {differ} differ from those of severity 1 "
                                 "(the layout repeats the same test images at every severity)")
    for name in wanted:
        path = present[name]
        shape, dtype, _, _ = _header(path)
        if dtype != np.uint8:
            raise CorruptionSetError(f"{path}: dtype {dtype}; expected uint8 RGB images")
        if shape != (SEVERITIES * n,) + tuple(image_shape):
            raise CorruptionSetError(f"{path}: shape {shape}; expected {(SEVERITIES * n,) + tuple(image_shape)} "
                                     f"({SEVERITIES} severities x the {n} images that {LABELS} labels)")
    return per_severity[0].copy(), {name: present[name] for name in wanted}


def gray_severities(path, n: int, chunk: int = 5000) -> np.ndarray:
    """uint8 (5, n, H, W): a validated `<corruption>.npy` converted to grey by rgb_to_gray, severity-major."""
    rgb = np.load(path, mmap_mode="r", allow_pickle=False)
    out = np.empty((len(rgb),) + rgb.shape[1:3], np.uint8)
    for s in range(0, len(rgb), chunk):
        out[s:s + chunk] = rgb_to_gray(np.ascontiguousarray(rgb[s:s + chunk]).transpose(0, 3, 1, 2))
    return out.reshape(SEVERITIES, n, *out.shape[1:])


def read_corruption_set(folder, corruptions=None, *, n_classes: int = 10, progress=None) -> CorruptionSet:
    """Validate (validate_folder) and convert every corruption to grey: a CorruptionSet."""
    labels, paths = validate_folder(folder, corruptions, n_classes=n_classes)
    out = CorruptionSet(folder=str(folder), labels=labels)
    for name, path in paths.items():
        if progress is not None:
            progress(f"{name}: converting {path.name} to grey")
        out.images[name] = gray_severities(path, len(labels))
    return out


def corruption_accuracy(net, images: np.ndarray, labels: np.ndarray, *, device=None,
                        batch_size: int = 500) -> np.ndarray:
    """float64 (5,): accuracy of `net` at each severity of one corruption, images uint8 (5, n, H, W)
    normalised as the clean test images are (noise.noise_accuracy at sd 0: uint8 / 255)."""
    from .noise import noise_accuracy
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != SEVERITIES:
        raise ValueError(f"images must be uint8 ({SEVERITIES}, n, H, W), got {images.dtype} {images.shape}")
    return np.array([noise_accuracy(net, images[s], labels, [0.0], device=device, batch_size=batch_size)[0][0]
                     for s in range(SEVERITIES)], np.float64)


__all__ = ["BENCHMARK", "CORRUPTIONS", "CorruptionSet", "CorruptionSetError", "EXTRA", "LABELS", "SEVERITIES",
           "corruption_accuracy", "gray_severities", "read_corruption_set", "validate_folder"]
