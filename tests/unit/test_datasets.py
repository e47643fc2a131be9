"""Data sets: CIFAR archives (tiny fakes in the real format, served from file:// URLs; no network),
the offline scikit-learn stand-in, and the tensor augmentation."""
import hashlib
import io
import pickle
import tarfile
import urllib.request

import numpy as np
import pytest
import torch

from neuralreg_schema.compute.classifier import augment
from neuralreg_schema.compute.classifier import datasets as ds
from neuralreg_schema.compute.classifier.data import DatasetError

N_PER_BATCH = 6


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _gray(data):
    """Luminance computed directly from (N, 3072) channel-major rows, in float."""
    rgb = data.reshape(-1, 3, 32, 32).astype(np.float64)
    return np.floor(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2] + 0.5 + 1e-9).astype(np.uint8)


def make_cifar10_folder(parent, seed=0):
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (N_PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, N_PER_BATCH)]
        _dump(folder / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(),
                                            b"labels": labels, b"data": data,
                                            b"filenames": [b"x.png"] * N_PER_BATCH})
        train.append((data, labels))
    test_data = rng.integers(0, 256, (N_PER_BATCH, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, N_PER_BATCH)]
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test_labels,
                                  b"data": test_data, b"filenames": [b"x.png"] * N_PER_BATCH})
    names = [f"class{i}".encode() for i in range(10)]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": N_PER_BATCH,
                                    b"num_vis": 3072})
    expected = dict(train_images=_gray(np.concatenate([d for d, _ in train])),
                    train_labels=np.concatenate([l for _, l in train]).astype(np.int64),
                    test_images=_gray(test_data), test_labels=np.asarray(test_labels, np.int64),
                    classes=[n.decode() for n in names])
    return folder, expected


def make_cifar100_folder(parent, seed=1):
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", 9), ("test", 4)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        _dump(folder / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                               b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": data})
        out[f"{split}_images"], out[f"{split}_labels"] = _gray(data), np.asarray(fine, np.int64)
    names = [f"fine{i}".encode() for i in range(100)]
    _dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20})
    out["classes"] = [n.decode() for n in names]
    return folder, out


def make_archive(folder, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive, _md5(archive)


def check(data, expected, name):
    assert data.name == name and not data.is_stand_in
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(data, key), expected[key], err_msg=key)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.classes == expected["classes"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv(ds.DATA_ENV, str(path))
    return path


@pytest.fixture
def cifar10_archive(tmp_path):
    folder, expected = make_cifar10_folder(tmp_path / "src10")
    (tmp_path / "served").mkdir()
    archive, md5 = make_archive(folder, tmp_path / "served" / "cifar-10-python.tar.gz")
    return archive, md5, expected


def test_canonical_addresses():
    assert ds.CIFAR["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert ds.CIFAR["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert ds.CIFAR["cifar10"].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert ds.CIFAR["cifar100"].url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert set(ds.DATASETS) == {"cifar10", "cifar100", "offline", "offline-photos"}


def test_luminance_weights():
    rgb = np.zeros((4, 3, 32, 32), np.uint8)
    rgb[0, 0], rgb[1, 1], rgb[2, 2], rgb[3] = 255, 255, 255, 255
    gray = ds.rgb_to_gray(rgb.reshape(4, -1))
    assert gray.shape == (4, 32, 32)
    assert [gray[i, 0, 0] for i in range(4)] == [76, 150, 29, 255]      # 76.245, 149.685, 29.07, 255


def test_download_once_verified_and_extracted(cifar10_archive, cache, monkeypatch):
    archive, md5, expected = cifar10_archive
    calls = []
    real = urllib.request.urlopen

    def counting(url, *a, **k):
        calls.append(url)
        if len(calls) > 1:
            raise AssertionError("downloaded twice")
        return real(url, *a, **k)

    monkeypatch.setattr(urllib.request, "urlopen", counting)
    seen = []
    data = ds.load_cifar("cifar10", url=archive.as_uri(), md5=md5, progress=lambda d, t: seen.append(d))
    check(data, expected, "cifar10-gray")
    assert calls == [archive.as_uri()] and seen and seen[-1] == archive.stat().st_size
    assert (cache / "cifar-10-python.tar.gz").is_file() and _md5(cache / "cifar-10-python.tar.gz") == md5
    assert (cache / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert archive.as_uri() in data.source and md5 in data.source
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]          # no temp leftovers
    again = ds.load_cifar("cifar10", url=archive.as_uri(), md5=md5)            # from the cache
    check(again, expected, "cifar10-gray")
    assert len(calls) == 1
    assert ds.load_dataset("cifar10", download=False).train_images.shape == (5 * N_PER_BATCH, 32, 32)


def test_cifar100_download(tmp_path, cache):
    folder, expected = make_cifar100_folder(tmp_path / "src")
    archive, md5 = make_archive(folder, tmp_path / "cifar-100-python.tar.gz")
    data = ds.load_dataset("cifar100", url=archive.as_uri(), md5=md5)
    check(data, expected, "cifar100-gray")
    assert data.n_classes == 100


def test_cached_archive_placed_by_hand(cifar10_archive, cache, monkeypatch):
    archive, md5, expected = cifar10_archive
    cache.mkdir()
    (cache / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes())
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download expected"))
    check(ds.load_cifar("cifar10", md5=md5, download=False), expected, "cifar10-gray")


def test_wrong_checksum_leaves_nothing(cifar10_archive, cache):
    archive, md5, _ = cifar10_archive
    with pytest.raises(DatasetError, match="md5"):
        ds.load_cifar("cifar10", url=archive.as_uri(), md5="0" * 32)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_unreachable_url(cache):
    url = "http://127.0.0.1:9/x.tar.gz"
    with pytest.raises(DatasetError) as info:
        ds.load_cifar("cifar10", url=url)
    message = str(info.value)
    assert url in message and "cifar-10-python.tar.gz" in message and str(cache) in message
    assert "Looked in" in message
    assert not cache.exists() or list(cache.iterdir()) == []


def test_no_download_empty_cache(cache, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download expected"))
    with pytest.raises(DatasetError, match="download=False") as info:
        ds.load_cifar("cifar100", download=False)
    assert ds.CIFAR["cifar100"].url in str(info.value) and str(cache) in str(info.value)


def test_user_folder_extracted(tmp_path, cache, monkeypatch):
    folder, expected = make_cifar10_folder(tmp_path / "mine")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download expected"))
    data = ds.load_cifar("cifar10", root=tmp_path / "mine", download=False)
    check(data, expected, "cifar10-gray")
    assert str(folder) in data.source
    check(ds.load_cifar("cifar10", root=folder, download=False), expected, "cifar10-gray")
    assert not cache.exists()                                   # nothing copied or written


def test_user_folder_with_archive(tmp_path, cache, monkeypatch):
    folder, expected = make_cifar10_folder(tmp_path / "src")
    user = tmp_path / "user"
    user.mkdir()
    archive, md5 = make_archive(folder, user / "cifar-10-python.tar.gz")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download expected"))
    data = ds.load_cifar("cifar10", root=user, md5=md5, download=False)
    check(data, expected, "cifar10-gray")
    assert str(archive) in data.source
    assert sorted(p.name for p in user.iterdir()) == ["cifar-10-python.tar.gz"]   # user folder untouched
    check(ds.load_cifar("cifar10", root=user, md5=md5, download=False), expected, "cifar10-gray")
    with pytest.raises(DatasetError, match="md5"):                  # the canonical checksum by default
        ds.load_cifar("cifar10", root=user, download=False)


def test_incomplete_user_folder(tmp_path, cache):
    folder, _ = make_cifar10_folder(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        ds.load_cifar("cifar10", root=tmp_path, download=False)


def test_escaping_member_refused(tmp_path, cache):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"gotcha"
        info = tarfile.TarInfo("../evil")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetError, match="evil"):
        ds.extract_archive(archive, cache, "cifar-10-batches-py")
    assert not (cache.parent / "evil").exists() and not (tmp_path / "evil").exists()
    assert list(cache.iterdir()) == []
    # the same through load_cifar, with a correct checksum
    with pytest.raises(DatasetError, match="refusing"):
        ds.load_cifar("cifar10", url=archive.as_uri(), md5=_md5(archive))
    assert list(cache.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_link_member_refused(tmp_path, cache):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DatasetError, match="refusing"):
        ds.extract_archive(archive, cache, "cifar-10-batches-py")


def test_corrupt_archive(tmp_path, cache):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"not a tarball at all")
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        ds.load_cifar("cifar10", url=archive.as_uri(), md5=_md5(archive))
    assert list(cache.iterdir()) == []                      # an unusable download is not kept
    cache.joinpath("cifar-10-python.tar.gz").write_bytes(archive.read_bytes())   # placed by hand
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        ds.load_cifar("cifar10", md5=_md5(archive), download=False)


def test_corrupt_pickle_names_file(tmp_path, cache):
    folder, _ = make_cifar10_folder(tmp_path)
    (folder / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DatasetError, match="data_batch_2"):
        ds.load_cifar("cifar10", root=tmp_path, download=False)


def test_wrong_shape_names_file(tmp_path, cache):
    folder, _ = make_cifar10_folder(tmp_path)
    _dump(folder / "test_batch", {b"labels": [0, 1], b"data": np.zeros((2, 1024), np.uint8)})
    with pytest.raises(DatasetError, match="test_batch.*3072"):
        ds.load_cifar("cifar10", root=tmp_path, download=False)
    _dump(folder / "test_batch", {b"labels": [0], b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DatasetError, match="test_batch"):
        ds.load_cifar("cifar10", root=tmp_path, download=False)
    _dump(folder / "test_batch", {b"labels": [0, 10], b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DatasetError, match="labels span"):
        ds.load_cifar("cifar10", root=tmp_path, download=False)


def test_validate():
    good = ds.ClassificationData("x", np.zeros((3, 32, 32), np.uint8), np.array([0, 1, 2]),
                                 np.zeros((1, 32, 32), np.uint8), np.array([1]), ["a", "b", "c"], "test")
    assert good.validate() is good
    for change in (dict(train_images=np.zeros((3, 32, 32), np.float32)),
                   dict(train_labels=np.array([0, 1], np.int64)),
                   dict(test_labels=np.array([3], np.int64)),
                   dict(test_images=np.zeros((1, 16, 16), np.uint8)),
                   dict(train_labels=np.array([0, 1, 2], np.int32))):
        bad = ds.ClassificationData(**{**good.__dict__, **change})
        with pytest.raises(DatasetError):
            bad.validate()


def test_offline_default():
    data = ds.load_dataset("offline")
    assert data.is_stand_in and "stand-in" in data.name and "STAND-IN" in data.summary()
    assert "stand-in" in repr(data) and "scikit-learn" in data.source
    assert data.train_images.shape == (1437, 32, 32) and data.test_images.shape == (360, 32, 32)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.classes == [str(i) for i in range(10)]
    assert data.train_images.max() == 255 and data.train_images.min() == 0
    train_counts, test_counts = np.bincount(data.train_labels), np.bincount(data.test_labels)
    assert len(test_counts) == 10 and test_counts.min() >= 35 and test_counts.max() <= 37
    np.testing.assert_allclose(test_counts / 360, (train_counts + test_counts) / 1797, atol=0.004)
    again = ds.load_dataset("offline", root="/nonexistent", download=False)
    assert again.name == data.name
    np.testing.assert_array_equal(again.test_images, data.test_images)
    np.testing.assert_array_equal(again.train_labels, data.train_labels)


def test_offline_upsampling_is_faithful():
    from sklearn.datasets import load_digits
    data = ds.load_offline_default()
    digits = load_digits()
    index = np.r_[data.meta["train_index"], data.meta["test_index"]]
    assert sorted(index) == list(range(1797))                      # a partition of all digits
    images = np.concatenate([data.train_images, data.test_images])
    np.testing.assert_array_equal(np.concatenate([data.train_labels, data.test_labels]), digits.target[index])
    up = torch.nn.functional.interpolate(torch.tensor(digits.images[index], dtype=torch.float32)[:, None],
                                         size=(32, 32), mode="bilinear", align_corners=False)[:, 0].numpy()
    assert np.abs(images.astype(np.float64) - up * 255 / 16).max() <= 0.5 + 1e-4
    # the 4x4 block means come back close to the 8x8 originals
    coarse = images.astype(np.float64).reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4)) * 16 / 255
    assert np.corrcoef(coarse.ravel(), digits.images[index].ravel())[0, 1] > 0.95


def test_to_tensor():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    t = augment.to_tensor(images)
    assert t.shape == (1, 1, 2, 2) and t.dtype == torch.float32
    assert torch.allclose(t[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert augment.to_tensor(torch.from_numpy(images)[:, None]).shape == (1, 1, 2, 2)
    with pytest.raises(TypeError):
        augment.to_tensor(images.astype(np.float32))


def _batch(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 32, 32, generator=g) + 0.1          # strictly positive: padding shows as 0


def test_random_crop_flip_shape_and_determinism():
    x = _batch(8)
    a = augment.random_crop_flip(x, torch.Generator().manual_seed(3))
    b = augment.random_crop_flip(x, torch.Generator().manual_seed(3))
    c = augment.random_crop_flip(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every output is one of the 9 x 9 x 2 crops of its zero-padded input
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        found = any(torch.equal(a[i, 0], w if not f else w.flip(-1))
                    for dy in range(9) for dx in range(9) for f in (False, True)
                    for w in [padded[i, 0, dy:dy + 32, dx:dx + 32]])
        assert found


def test_random_crop_flip_variety():
    x = _batch(1).expand(400, 1, 32, 32).contiguous()
    out = augment.random_crop_flip(x, torch.Generator().manual_seed(0))
    unpadded_flip = torch.flip(x[:1], dims=[-1])
    n_flipped = sum(torch.equal(o[None], unpadded_flip) for o in out)
    n_same = sum(torch.equal(o[None], x[:1]) for o in out)
    assert n_flipped > 0 and n_same > 0                 # centre crops (1/81 each way) show up in 400 draws
    assert len({o.sum().item() for o in out}) > 50


def test_crop_flip_exact():
    x = _batch(3)
    zero = torch.zeros(3, dtype=torch.long)
    # zero shift (offset == padding) and flip -> torch.flip
    out = augment.crop_flip(x, zero + 4, zero + 4, torch.ones(3, dtype=torch.bool))
    assert torch.equal(out, torch.flip(x, dims=[-1]))
    assert torch.equal(augment.crop_flip(x, zero + 4, zero + 4, torch.zeros(3, dtype=torch.bool)), x)
    # a shifted window of the zero-padded image, checked by hand for one case: dy=1, dx=6 (3 rows down
    # padding, 2 columns to the right)
    out = augment.crop_flip(x, torch.tensor([1, 4, 4]), torch.tensor([6, 4, 4]), torch.tensor([False, False, True]))
    expected = torch.zeros(32, 32)
    expected[3:, :30] = x[0, 0, :29, 2:]
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(out[2], x[2].flip(-1))
    # with a flip too: mirror of that window
    flipped = augment.crop_flip(x[:1], torch.tensor([1]), torch.tensor([6]), torch.tensor([True]))
    assert torch.equal(flipped[0, 0], expected.flip(-1))


def test_multichannel_batch():
    x = torch.rand(4, 3, 32, 32) + 0.1
    out = augment.random_crop_flip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
