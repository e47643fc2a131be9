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

The container `ClassificationData`, `DatasetError` and the luma conversion `rgb_to_gray` live in
`data.py`; the natural-image stand-in in `photos.py` (`load_offline_photos`, data set
``offline-photos``); tensors and the CIFAR augmentation in `augment.py`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data import ClassificationData, DatasetError, rgb_to_gray
from .photos import load_offline_photos

DATA_ENV = "NEURALREG_DATA"
DEFAULT_CACHE = Path("~/.cache/neuralreg/datasets")
DATASETS = ("cifar10", "cifar100", "offline", "offline-photos")
OFFLINE_NAME = "sklearn-digits (offline stand-in for CIFAR)"
OFFLINE_N_TEST = 360
OFFLINE_SEED = 0
_STAMP = ".neuralreg-archive-md5"       # written into a folder extracted from an archive
_CHUNK = 1 << 20


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


def load_dataset(name: str, **kw) -> ClassificationData:
    """"cifar10" / "cifar100" (keyword arguments go to load_cifar), "offline" (load_offline_default:
    the digits) or "offline-photos" (load_offline_photos: the natural-image patches); for the offline
    stand-ins the CIFAR-only keywords root/download/url/md5/progress are accepted and ignored, so
    callers can pass the same settings whatever the name)."""
    key = str(name).lower()
    if key in ("offline", "offline-photos"):
        for cifar_only in ("root", "download", "url", "md5", "progress"):
            kw.pop(cifar_only, None)
        if key == "offline":
            return load_offline_default(**kw)
        return load_offline_photos(**kw)
    if key in ("cifar10", "cifar100"):
        return load_cifar(key, **kw)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
