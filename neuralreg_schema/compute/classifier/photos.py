"""The natural-image stand-in for CIFAR (data set ``offline-photos``, `load_offline_photos`).

The digits stand-in (`datasets.load_offline_default`) has no fine detail for a network to over-rely on
(8 x 8 images scaled up), so it may hide the effect the paper measures. This set is closer to CIFAR:
grayscale 32 x 32 patches of ten photos and textures that ship as PNG files inside scikit-image's wheel
(``skimage/data``; read from the package folder, never downloaded), labelled by their source photo:
camera, astronaut, coffee, chelsea (a cat), motorcycle (motorcycle_left), coins, moon, and the textures
grass, gravel and brick. PNG only: its decoding is bit-exact on every machine (JPEG decoders may differ
by a grey level, and every worker must load identical data; skimage's rocket.jpg and scikit-learn's
china/flower JPEGs are left out for that reason). A missing photo raises DatasetError naming the file,
the package and the fix.

Each photo is converted to grey (`data.rgb_to_gray`, the BT.601 integer formula) and split by columns: the left
70 % (columns < split) gives the training patches, the right 30 % after an 8-pixel guard band
(columns >= split + 8) the test patches, so no test pixel was ever seen in training. Patches are
taken at three scales (the photo area-averaged by 1, 2 and 3, i.e. a patch covers 32, 64 or 96
photo pixels), at uniformly drawn positions that lie wholly inside their region: per photo 50
training and 16 test patches per scale (1500 train / 480 test in all). The positions come from
``numpy.random.default_rng((seed, photo, scale, split))``; train and test are then each put in a
fixed seeded order (classes interleaved, so ``max_train`` keeps every class). ``meta['train_boxes']``
/ ``meta['test_boxes']`` give each patch's (photo, scale, top, left, bottom, right) in photo pixels.

Pure numpy (and PIL for the PNGs); never imports datajoint. `datasets.load_dataset("offline-photos")` calls
`load_offline_photos`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .data import ClassificationData, DatasetError, rgb_to_gray

PHOTOS_NAME = "skimage photo patches (offline stand-in for CIFAR)"
# class name -> PNG file inside scikit-image's package folder (skimage/data/)
PHOTO_FILES = {"camera": "camera.png", "astronaut": "astronaut.png", "coffee": "coffee.png",
               "chelsea": "chelsea.png", "motorcycle": "motorcycle_left.png", "coins": "coins.png",
               "moon": "moon.png", "grass": "grass.png", "gravel": "gravel.png", "brick": "brick.png"}
PHOTO_SCALES = (1, 2, 3)          # area-averaging factors: a patch covers 32, 64 or 96 photo pixels
PHOTO_TRAIN_PER_SCALE = 50        # training patches per photo and scale
PHOTO_TEST_PER_SCALE = 16         # test patches per photo and scale
PHOTO_TEST_FRACTION = 0.3         # the right 30 % of each photo's columns ...
PHOTO_GUARD = 8                   # ... beyond a guard band of 8 photo pixels
PHOTO_SIZE = 32
PHOTO_SEED = 0


def photo_folder() -> Path:
    """scikit-image's data folder (where the PNGs of PHOTO_FILES ship); DatasetError without skimage."""
    import importlib.util
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the offline-photos stand-in reads photos that ship with scikit-image, which is not "
                           "installed: pip install scikit-image (or use --dataset offline, the digits)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_photo(name: str, folder: str | os.PathLike | None = None) -> np.ndarray:
    """uint8 (H, W) grey levels of photo `name` (a key of PHOTO_FILES): L as is, RGB by BT.601."""
    from PIL import Image as PILImage
    if name not in PHOTO_FILES:
        raise DatasetError(f"unknown photo {name!r}; known: {', '.join(PHOTO_FILES)}")
    path = Path(folder) / PHOTO_FILES[name] if folder is not None else photo_folder() / PHOTO_FILES[name]
    if not path.is_file():
        raise DatasetError(f"photo {name!r} of the offline-photos stand-in is missing: {path} (it ships in "
                           "scikit-image's wheel; reinstall scikit-image >= 0.19, or use --dataset offline)")
    try:
        with PILImage.open(path) as image:
            image.load()
            mode, pixels = image.mode, np.asarray(image)
    except Exception as exc:
        raise DatasetError(f"photo {name!r}: cannot read {path} ({type(exc).__name__}: {exc})") from exc
    if mode == "L" and pixels.ndim == 2:
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    if mode == "RGB" and pixels.ndim == 3:
        return rgb_to_gray(np.moveaxis(pixels, 2, 0)[None])[0]
    raise DatasetError(f"photo {name!r}: {path} is {mode} {pixels.shape}, expected grey (L) or RGB")


def _area_downsample(gray: np.ndarray, factor: int) -> np.ndarray:
    """float64 (H // f, W // f): means of f x f blocks (the photo cropped to a multiple of f)."""
    h, w = (gray.shape[0] // factor) * factor, (gray.shape[1] // factor) * factor
    return gray[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def photo_regions(width: int, test_fraction: float = PHOTO_TEST_FRACTION, guard: int = PHOTO_GUARD
                  ) -> dict[str, tuple[int, int]]:
    """Column ranges [start, end) in photo pixels of the 'train' and 'test' regions of a photo."""
    split = int(round((1 - test_fraction) * width))
    return {"train": (0, split), "test": (split + guard, width)}


def photo_patches(gray: np.ndarray, photo_index: int, *, seed: int = PHOTO_SEED, scales=PHOTO_SCALES,
                  per_scale: dict | None = None, size: int = PHOTO_SIZE, name: str = "photo"
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train' | 'test': (uint8 patches (n, size, size), int64 boxes (n, 6))} of one grey photo.
    Box columns: photo_index, scale, top, left, bottom, right (photo pixels, end exclusive); every
    patch lies wholly inside its split's column region (`photo_regions`)."""
    per_scale = per_scale or {"train": PHOTO_TRAIN_PER_SCALE, "test": PHOTO_TEST_PER_SCALE}
    regions = photo_regions(gray.shape[1])
    out = {}
    for split_index, split in enumerate(("train", "test")):
        patches, boxes = [], []
        for scale in scales:
            small = _area_downsample(gray, scale)
            start, end = regions[split]
            x_lo = -(-start // scale)                     # first column wholly inside the region
            x_hi = min(end // scale, small.shape[1]) - size   # last allowed left edge
            y_hi = small.shape[0] - size
            if x_hi < x_lo or y_hi < 0:
                raise DatasetError(f"photo {name!r} ({gray.shape[0]} x {gray.shape[1]}) is too small for "
                                   f"{size} x {size} {split} patches at scale {scale}")
            rng = np.random.default_rng((int(seed), int(photo_index), int(scale), split_index))
            n = per_scale[split]
            ys = rng.integers(0, y_hi + 1, n)
            xs = rng.integers(x_lo, x_hi + 1, n)
            for y, x in zip(ys, xs):
                patch = small[y:y + size, x:x + size]
                patches.append(np.floor(patch + 0.5).astype(np.uint8))
                boxes.append((photo_index, scale, y * scale, x * scale, (y + size) * scale, (x + size) * scale))
        out[split] = (np.stack(patches), np.asarray(boxes, dtype=np.int64))
    return out


def load_offline_photos(*, seed: int = PHOTO_SEED, folder: str | os.PathLike | None = None,
                        photos: tuple[str, ...] | None = None) -> ClassificationData:
    """The natural-image stand-in for CIFAR: 32 x 32 grey patches of photos shipped with scikit-image,
    labelled by photo, train and test from disjoint column regions (see the module docstring).
    `folder` replaces scikit-image's data folder (tests); `photos` a subset of PHOTO_FILES (tests)."""
    names = list(photos or PHOTO_FILES)
    unknown = [n for n in names if n not in PHOTO_FILES]
    if unknown:
        raise DatasetError(f"unknown photo(s) {unknown}; known: {', '.join(PHOTO_FILES)}")
    where = Path(folder) if folder is not None else photo_folder()
    missing = [PHOTO_FILES[n] for n in names if not (where / PHOTO_FILES[n]).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} photo(s) of the offline-photos stand-in are missing from {where}: "
                           f"{', '.join(missing)} (they ship in scikit-image's wheel; reinstall scikit-image "
                           ">= 0.19, or use --dataset offline, the digits)")
    split_images = {"train": [], "test": []}
    split_labels = {"train": [], "test": []}
    split_boxes = {"train": [], "test": []}
    for index, name in enumerate(names):
        parts = photo_patches(read_photo(name, folder), index, seed=seed, name=name)
        for split, (patches, boxes) in parts.items():
            split_images[split].append(patches)
            split_labels[split].append(np.full(len(patches), index, dtype=np.int64))
            split_boxes[split].append(boxes)
    arrays = {}
    for split_index, split in enumerate(("train", "test")):
        images = np.concatenate(split_images[split])
        order = np.random.default_rng((int(seed), 1000 + split_index)).permutation(len(images))
        arrays[split] = (images[order], np.concatenate(split_labels[split])[order],
                         np.concatenate(split_boxes[split])[order])
    try:
        import skimage
        version = f"scikit-image {skimage.__version__}"
    except ImportError:                                              # pragma: no cover (folder= given)
        version = "a folder of the scikit-image photos"
    source = (f"{version} skimage/data PNGs ({', '.join(PHOTO_FILES[n] for n in names)}), grey BT.601, "
              f"32x32 patches at scales {'/'.join(map(str, PHOTO_SCALES))}, train from the left "
              f"{1 - PHOTO_TEST_FRACTION:.0%} of each photo's columns, test from the right "
              f"{PHOTO_TEST_FRACTION:.0%} beyond a {PHOTO_GUARD}-pixel guard; seed {seed}")
    data = ClassificationData(PHOTOS_NAME, arrays["train"][0], arrays["train"][1], arrays["test"][0],
                              arrays["test"][1], names, source, is_stand_in=True,
                              meta={"train_boxes": arrays["train"][2], "test_boxes": arrays["test"][2],
                                    "box_columns": ("photo", "scale", "top", "left", "bottom", "right")})
    return data.validate()
