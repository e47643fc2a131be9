"""What a classification data set is: `ClassificationData` (uint8 grey images and int64 labels of both
splits, validated), `DatasetError`, and `rgb_to_gray`, the exact integer luma conversion that every
reader uses (datasets.py for CIFAR and the digits, photos.py for the photo patches). Pure numpy;
never imports datajoint.

Grayscale: gray = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma weights, the ones PIL's
``convert('L')`` uses), rounded half up to uint8, computed exactly in integers as
``(299 R + 587 G + 114 B + 500) // 1000``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DatasetError(RuntimeError):
    """A data set could not be found, downloaded, verified, extracted or read."""


@dataclass
class ClassificationData:
    """Images (uint8, (N, H, W) grey levels) with int64 labels indexing `classes`."""
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    source: str
    is_stand_in: bool = False
    meta: dict = field(default_factory=dict)      # extras, e.g. the stand-in's indices into load_digits

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def validate(self) -> "ClassificationData":
        """Check dtypes, shapes and label ranges; raise DatasetError naming the problem."""
        if not self.classes:
            raise DatasetError(f"{self.name}: no class names")
        shape = None
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
                raise DatasetError(f"{self.name}: {split}_images must be a uint8 (N, H, W) array, got "
                                   f"{getattr(images, 'dtype', type(images))} "
                                   f"{getattr(images, 'shape', '')}")
            if shape is not None and images.shape[1:] != shape:
                raise DatasetError(f"{self.name}: train images are {shape}, test images {images.shape[1:]}")
            shape = images.shape[1:]
            if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
                raise DatasetError(f"{self.name}: {split}_labels must be a 1-d int64 array, got "
                                   f"{getattr(labels, 'dtype', type(labels))} "
                                   f"{getattr(labels, 'shape', '')}")
            if len(labels) != len(images) or len(images) == 0:
                raise DatasetError(f"{self.name}: {len(images)} {split} images but {len(labels)} labels")
            if labels.min() < 0 or labels.max() >= len(self.classes):
                raise DatasetError(f"{self.name}: {split} labels span {labels.min()}..{labels.max()}, "
                                   f"outside 0..{len(self.classes) - 1}")
        return self

    def summary(self) -> str:
        """One line for logs; says STAND-IN loudly for the offline substitute."""
        flag = " [STAND-IN, not CIFAR]" if self.is_stand_in else ""
        return (f"{self.name}{flag}: {len(self.train_images)} train / {len(self.test_images)} test, "
                f"{self.n_classes} classes, {self.train_images.shape[1]}x{self.train_images.shape[2]}; "
                f"{self.source}")

    def __repr__(self) -> str:
        return f"ClassificationData({self.summary()})"


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-major R, G, B rows (or (N, 3, H, W)) -> (N, 32, 32) / (N, H, W) uint8,
    gray = round(0.299 R + 0.587 G + 0.114 B), exactly, half up."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = rgb.reshape(len(rgb), 3, 32, 32)
    r, g, b = (rgb[:, i].astype(np.int32) for i in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)
