"""Image-classification data for the robustness experiments: grayscale CIFAR-10 / CIFAR-100, and two
small real offline stand-ins for machines without the archives: scikit-learn's handwritten digits
(``offline``) and patches of photos that ship with scikit-image (``offline-photos``).

Pure numpy / torch (and the standard library); never imports datajoint.

CIFAR (`load_cifar`)
--------------------
The standard "python version" archives of Krizhevsky's CIFAR pages, with the md5 checksums that
torchvision also uses:

* CIFAR-10:  https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz   md5 c58f30108f718f92721af3b95e74349a
  (folder ``cifar-10-batches-py``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``)
* CIFAR-100: https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz  md5 eb9058c3a382ffc7106e4002c42a8d85
  (folder ``cifar-100-python``: ``train``, ``test``, ``meta``; the 100 fine labels are used)

Where the data is looked for, in this order (the first hit wins):

1. ``root``, a folder the caller names: the extracted folder itself, a folder holding the extracted
   folder, or a folder holding the ``.tar.gz`` (checked against the md5, then extracted into the cache
   dir; the caller's folder is never written to);
2. the cache dir, ``$NEURALREG_DATA`` or ``~/.cache/neuralreg/datasets``: the extracted folder, or the
   ``.tar.gz`` (e.g. copied there by hand for an offline machine);
3. a download (``download=True``) with urllib into a temporary file in the cache dir, md5-checked and
   only then renamed into place; a failed or mismatching download (or one that then cannot be
   extracted) leaves nothing behind. The archive is kept next to the extracted folder, so the download
   happens once.

Extraction is done into a temporary folder in the cache dir and renamed into place when complete.
Every member is checked first: only regular files and folders whose paths stay inside the target are
accepted (absolute paths, ``..``, links and devices are refused), and Python's ``filter="data"`` is
used where tarfile has it.

Grayscale: gray = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma weights, the ones PIL's
``convert('L')`` uses), rounded half up to uint8, computed exactly in integers as
``(299 R + 587 G + 114 B + 500) // 1000``. (PIL works in 16-bit fixed point, so on rare ties it can
differ from this by one grey level.)

Offline stand-in (`load_offline_default`)
-----------------------------------------
scikit-learn's ``load_digits`` (1797 real handwritten digits, 8 x 8, 16 grey levels, 10 classes) ships
inside the scikit-learn package, so it is always available. It is upsampled to 32 x 32 bilinearly
(``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``), scaled 0..16 -> 0..255,
rounded to uint8, and split with a fixed seed into 1437 train / 360 test images, stratified by class.
Its ``name`` and ``is_stand_in`` say that it is a stand-in and not CIFAR.

Offline natural-image stand-in (`load_offline_photos`, data set ``offline-photos``)
-----------------------------------------------------------------------------------
The digits have no fine detail for a network to over-rely on (they are 8 x 8 images scaled up), so
they may hide the effect the paper measures. This set is closer to CIFAR: grayscale 32 x 32 patches
of ten photos and textures that ship as PNG files inside scikit-image's wheel (``skimage/data``;
read from the package folder, never downloaded), labelled by their source photo: camera, astronaut,
coffee, chelsea (a cat), motorcycle (motorcycle_left), coins, moon, and the textures grass, gravel
and brick. PNG only: its decoding is bit-exact on every machine (JPEG decoders may differ by a grey
level, and every worker must load identical data; skimage's rocket.jpg and scikit-learn's
china/flower JPEGs are left out for that reason). A missing photo raises DatasetError naming the
file, the package and the fix.

Each photo is converted to grey (the BT.601 integer formula above) and split by columns: the left
70 % (columns < split) gives the training patches, the right 30 % after an 8-pixel guard band
(columns >= split + 8) the test patches, so no test pixel was ever seen in training. Patches are
taken at three scales (the photo area-averaged by 1, 2 and 3, i.e. a patch covers 32, 64 or 96
photo pixels), at uniformly drawn positions that lie wholly inside their region: per photo 50
training and 16 test patches per scale (1500 train / 480 test in all). The positions come from
``numpy.random.default_rng((seed, photo, scale, split))``; train and test are then each put in a
fixed seeded order (classes interleaved, so ``max_train`` keeps every class). ``meta['train_boxes']``
/ ``meta['test_boxes']`` give each patch's (photo, scale, top, left, bottom, right) in photo pixels.

Augmentation
------------
`to_tensor` turns uint8 images into float32 in [0, 1] of shape (N, 1, H, W); `random_crop_flip` is the
standard CIFAR augmentation (random 32 x 32 crop of the image zero-padded by 4, horizontal flip with
p = 0.5) done with one vectorised gather on the batch's device.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

DATA_ENV = "NEURALREG_DATA"
DEFAULT_CACHE = Path("~/.cache/neuralreg/datasets")
DATASETS = ("cifar10", "cifar100", "offline", "offline-photos")
OFFLINE_NAME = "sklearn-digits (offline stand-in for CIFAR)"
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
OFFLINE_N_TEST = 360
OFFLINE_SEED = 0
_STAMP = ".neuralreg-archive-md5"       # written into a folder extracted from an archive
_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A data set could not be found, downloaded, verified, extracted or read."""


@dataclass(frozen=True)
class CifarSpec:
    key: str
    url: str
    md5: str
    archive: str            # file name of the .tar.gz
    folder: str             # the folder the archive extracts to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    n_classes: int


CIFAR = {
    "cifar10": CifarSpec(
        "cifar10", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        b"labels", b"label_names", 10),
    "cifar100": CifarSpec(
        "cifar100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python.tar.gz", "cifar-100-python",
        ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names", 100),
}


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


# ----------------------------------------------------------------------------------------------------
# locations, download, extraction

def cache_dir() -> Path:
    """$NEURALREG_DATA, else ~/.cache/neuralreg/datasets (not created here)."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else DEFAULT_CACHE.expanduser()


def file_md5(path: str | os.PathLike) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
    return md5.hexdigest()


def _download(url: str, target: Path, md5: str, progress: Callable[[int, int | None], None] | None):
    """Download `url` to a temporary file beside `target`, check its md5, rename it to `target`.
    Nothing is left behind on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".download-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        done = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            total = int(total) if total and str(total).isdigit() else None
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if digest.hexdigest() != md5:
            raise DatasetError(f"download of {url} has md5 {digest.hexdigest()}, expected {md5}; "
                               f"the file was discarded")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _checked_members(tar: tarfile.TarFile, target: Path, archive: Path) -> list[tarfile.TarInfo]:
    """All members, refusing any that is not a plain file or folder or that would land outside target."""
    root = target.resolve()
    members = []
    for member in tar.getmembers():
        if not (member.isfile() or member.isdir()):
            raise DatasetError(f"{archive}: refusing member {member.name!r} (not a regular file or folder)")
        dest = (root / member.name).resolve()
        if os.path.isabs(member.name) or (dest != root and root not in dest.parents):
            raise DatasetError(f"{archive}: refusing member {member.name!r}, which would be written "
                               f"outside {target}")
        members.append(member)
    return members


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike, folder: str) -> Path:
    """Safely extract `archive` (tar.gz) into a temporary folder in `dest_dir`, then rename its
    `folder` to dest_dir/folder (replacing an older one). Returns that path."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".extract-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _checked_members(tar, tmp, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:                                               # pragma: no cover (old Python)
                    tar.extractall(tmp, members=members)
        except DatasetError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise DatasetError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from exc
        extracted = tmp / folder
        if not extracted.is_dir():
            raise DatasetError(f"{archive}: the archive holds no folder {folder!r}")
        final = dest_dir / folder
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".old-"))
            os.replace(final, old / folder)
        os.replace(extracted, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for old in dest_dir.glob(".old-*"):
            shutil.rmtree(old, ignore_errors=True)


def _missing(folder: Path, spec: CifarSpec) -> list[str]:
    return [name for name in (*spec.train_files, *spec.test_files, spec.meta_file)
            if not (folder / name).is_file()]


def _from_archive(archive: Path, spec: CifarSpec, md5: str, cache: Path) -> Path:
    """md5-check a local archive and extract it into the cache (reusing an extraction of the same archive)."""
    actual = file_md5(archive)
    if actual != md5:
        raise DatasetError(f"{archive}: md5 {actual}, expected {md5} for {spec.archive}; "
                           f"the file is damaged or not the {spec.key} archive")
    existing = cache / spec.folder
    stamp = existing / _STAMP
    if existing.is_dir() and stamp.is_file() and stamp.read_text().strip() == md5 and not _missing(existing, spec):
        return existing
    folder = extract_archive(archive, cache, spec.folder)
    (folder / _STAMP).write_text(md5 + "\n")
    return folder


def locate_cifar(name: str, *, root=None, download: bool = True, url: str | None = None,
                 md5: str | None = None, progress=None) -> tuple[Path, str]:
    """The extracted folder of CIFAR `name` (finding, extracting or downloading it) and a one-line
    description of where it came from."""
    spec = _spec(name)
    url = url or spec.url
    md5 = (md5 or spec.md5).lower()
    cache = cache_dir()
    tried = []
    if root is not None:
        root = Path(root).expanduser()
        for folder in ((root,) if root.name == spec.folder else ()) + (root / spec.folder,):
            tried.append(str(folder))
            if folder.is_dir():
                missing = _missing(folder, spec)
                if missing:
                    raise DatasetError(f"{folder}: incomplete {spec.key} folder, missing {', '.join(missing)}")
                return folder, f"folder {folder}"
        archive = root / spec.archive
        tried.append(str(archive))
        if archive.is_file():
            return _from_archive(archive, spec, md5, cache), f"archive {archive} (md5 {md5})"
    folder = cache / spec.folder
    tried.append(str(folder))
    if folder.is_dir() and not _missing(folder, spec):
        return folder, f"{url} (md5 {md5}), cached in {folder}"
    archive = cache / spec.archive
    tried.append(str(archive))
    if archive.is_file():
        return _from_archive(archive, spec, md5, cache), f"{url} (md5 {md5}), cached archive {archive}"
    help_text = (f"Looked in: {'; '.join(tried)}. Put {spec.archive} (md5 {md5}, from {url}) into {cache} "
                 f"(or set ${DATA_ENV}), or pass root= a folder holding it or its extracted "
                 f"{spec.folder!r} folder.")
    if not download:
        raise DatasetError(f"{spec.key} not found and download=False. {help_text}")
    try:
        _download(url, archive, md5, progress)
    except DatasetError as exc:
        raise DatasetError(f"{exc}. {help_text}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DatasetError(f"could not download {spec.key} from {url} ({type(exc).__name__}: {exc}). "
                           f"{help_text}") from exc
    try:
        folder = _from_archive(archive, spec, md5, cache)
    except BaseException:
        archive.unlink(missing_ok=True)          # a download that cannot be used is not kept
        raise
    return folder, f"{url} (md5 {md5}), downloaded to {archive}"


# ----------------------------------------------------------------------------------------------------
# reading

def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-major R, G, B rows (or (N, 3, H, W)) -> (N, 32, 32) / (N, H, W) uint8,
    gray = round(0.299 R + 0.587 G + 0.114 B), exactly, half up."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = rgb.reshape(len(rgb), 3, 32, 32)
    r, g, b = (rgb[:, i].astype(np.int32) for i in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)


def _unpickle(path: Path) -> dict:
    # pickle is what the CIFAR "python version" format is; the files come from an md5-checked archive
    # or from a folder the user named, never from an unchecked source.
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if b"data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: missing key b'data' or {label_key!r}; keys are {sorted(batch)}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' must be a uint8 (N, 3072) array, got "
                           f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: {label_key!r} are not integers") from exc
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    return rgb_to_gray(data), labels


def read_cifar_folder(folder: str | os.PathLike, name: str, source: str | None = None) -> ClassificationData:
    """Read an extracted CIFAR folder into grayscale ClassificationData."""
    spec, folder = _spec(name), Path(folder)
    missing = _missing(folder, spec)
    if missing:
        raise DatasetError(f"{folder}: incomplete {spec.key} folder, missing {', '.join(missing)}")
    meta_path = folder / spec.meta_file
    meta = _unpickle(meta_path)
    names = meta.get(spec.names_key)
    if not isinstance(names, (list, tuple)) or len(names) != spec.n_classes:
        raise DatasetError(f"{meta_path}: {spec.names_key!r} must list {spec.n_classes} class names")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    splits = {}
    for split, files in (("train", spec.train_files), ("test", spec.test_files)):
        parts = [_read_batch(folder / f, spec.label_key) for f in files]
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    data = ClassificationData(f"{spec.key}-gray", *splits["train"], *splits["test"], classes,
                              source or f"folder {folder}", is_stand_in=False)
    try:
        return data.validate()
    except DatasetError as exc:
        raise DatasetError(f"{folder}: {exc}") from exc


def load_cifar(name: str, *, root=None, download: bool = True, url: str | None = None,
               md5: str | None = None, progress: Callable[[int, int | None], None] | None = None
               ) -> ClassificationData:
    """Grayscale CIFAR-10 ("cifar10") or CIFAR-100 ("cifar100", fine labels); see the module docstring
    for where it is looked for. `url`/`md5` override the canonical address and checksum (a mirror, or
    tests); `progress(bytes_done, total_or_None)` is called while downloading."""
    folder, source = locate_cifar(name, root=root, download=download, url=url, md5=md5, progress=progress)
    return read_cifar_folder(folder, name, source)


def _spec(name: str) -> CifarSpec:
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in CIFAR:
        raise ValueError(f"unknown CIFAR data set {name!r}; known: {', '.join(CIFAR)}")
    return CIFAR[key]


# ----------------------------------------------------------------------------------------------------
# offline stand-in

def _stratified_test_mask(labels: np.ndarray, n_test: int, seed: int) -> np.ndarray:
    """Boolean mask of a seeded stratified test set of exactly n_test items (largest-remainder
    allocation of the per-class counts)."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_test / len(labels)
    take = np.floor(quota).astype(int)
    order = np.lexsort((classes, -(quota - take)))        # largest remainders first, ties by class
    take[order[:n_test - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        mask[rng.permutation(idx)[:k]] = True
    return mask


def load_offline_default(*, n_test: int = OFFLINE_N_TEST, seed: int = OFFLINE_SEED) -> ClassificationData:
    """scikit-learn's handwritten digits as a small, real, always-available stand-in for CIFAR:
    8x8 -> 32x32 bilinear, 0..16 -> 0..255 uint8, fixed seeded stratified split (1437 / 360)."""
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError("the offline stand-in needs scikit-learn (pip install scikit-learn)") from exc
    digits = load_digits()
    images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32))[:, None]
    up = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)[:, 0].numpy()
    gray = np.clip(np.rint(up * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = np.asarray(digits.target, dtype=np.int64)
    test = _stratified_test_mask(labels, n_test, seed)
    data = ClassificationData(
        OFFLINE_NAME, gray[~test], labels[~test], gray[test], labels[test],
        [str(c) for c in digits.target_names],
        f"scikit-learn {sklearn.__version__} sklearn.datasets.load_digits (1797 real handwritten digits "
        f"8x8, bundled with the package), bilinear-upsampled to 32x32, stratified split seed {seed}",
        is_stand_in=True,
        meta={"train_index": np.flatnonzero(~test), "test_index": np.flatnonzero(test)})
    return data.validate()


# ----------------------------------------------------------------------------------------------------
# offline natural-image stand-in

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


def load_dataset(name: str, **kw) -> ClassificationData:
    """"cifar10" / "cifar100" (keyword arguments go to load_cifar), "offline" (load_offline_default:
    the digits) or "offline-photos" (load_offline_photos: the natural-image patches); for the offline
    stand-ins the CIFAR-only keywords root/download/url/md5/progress are accepted and ignored, so
    callers can pass the same settings whatever the name)."""
    key = str(name).lower()
    if key in ("offline", "offline-photos"):
        for cifar_only in ("root", "download", "url", "md5", "progress"):
            kw.pop(cifar_only, None)
        return load_offline_default(**kw) if key == "offline" else load_offline_photos(**kw)
    if key in ("cifar10", "cifar100"):
        return load_cifar(key, **kw)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------------------------------
# tensors and augmentation

def to_tensor(images, device=None) -> torch.Tensor:
    """uint8 (N, H, W) or (N, 1, H, W) grey levels -> float32 in [0, 1] of shape (N, 1, H, W)."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if t.dtype != torch.uint8:
        raise TypeError(f"to_tensor expects uint8 images, got {t.dtype}")
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"images must be (N, H, W) or (N, 1, H, W), got {tuple(t.shape)}")
    return t.to(device=device).to(torch.float32).div_(255.0)


def crop_flip(batch: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Deterministic part of `random_crop_flip`: image i is the (H, W) window at rows dy[i].., columns
    dx[i].. of the image zero-padded by `padding` on every side, mirrored left-right where flip[i]."""
    b, c, h, w = batch.shape
    dev = batch.device
    padded = F.pad(batch, (padding, padding, padding, padding))          # zeros
    dy, dx, flip = dy.to(dev).long(), dx.to(dev).long(), flip.to(dev).bool()
    rows = dy[:, None] + torch.arange(h, device=dev)                       # (B, H)
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]    # (B, W)
    index = torch.arange(b, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]   # (B, H, W, C)
    # a fresh NCHW tensor: the permuted (B, 1, H, W) view counts as channels-last too, and would make
    # the CPU convolutions run NHWC into a defective oneDNN kernel (compute/runtime.py)
    return out.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)


def random_crop_flip(batch: torch.Tensor, generator: torch.Generator | None = None,
                     padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding `padding`, offsets uniform in 0..2*padding) and horizontal flip with
    p = 0.5, per image, vectorised on the batch's device. The offsets and flips are drawn from
    `generator` (on its own device) in the order dy, dx, flip."""
    if batch.ndim != 4:
        raise ValueError(f"batch must be (B, C, H, W), got {tuple(batch.shape)}")
    b = batch.shape[0]
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_dev)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_dev)
    flip = torch.rand(b, generator=generator, device=gen_dev) < 0.5
    return crop_flip(batch, dy, dx, flip, padding)
