"""Common corruptions (issue 22): the CIFAR-10-C reader on a tiny fixture in the published layout
(3 corruptions x 5 severities x 8 images, built in a temp dir), every refusal of a malformed folder,
the grey conversion and normalisation against the classifiers' own path, the accuracy per severity,
and the local corruption functions against their formulas."""
import numpy as np
import pytest
import torch
from torch import nn

from neuralreg_schema.compute.classifier.data import rgb_to_gray
from neuralreg_schema.compute.evaluation import corruption_functions as F
from neuralreg_schema.compute.evaluation import corruptions as C
from neuralreg_schema.compute.evaluation.noise import noise_accuracy

NAMES = ("gaussian_noise", "contrast", "saturate")
N = 8


def make_layout(folder, names=NAMES, n=N, seed=0, labels=None):
    """The published layout in `folder`: <name>.npy (5 n, 32, 32, 3) uint8, labels.npy (5 n,) uint8."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    labels = rng.integers(0, 10, n) if labels is None else labels
    np.save(folder / "labels.npy", np.tile(np.asarray(labels, np.uint8), 5))
    return folder


def test_reads_the_published_layout_in_grey_severity_major(tmp_path):
    folder = make_layout(tmp_path / "c")
    labels, paths = C.validate_folder(folder, NAMES)
    assert labels.dtype == np.int64 and labels.shape == (N,) and set(paths) == set(NAMES)
    cset = C.read_corruption_set(folder, NAMES)
    for name in NAMES:
        rgb = np.load(folder / f"{name}.npy")
        grey = cset.images[name]
        assert grey.dtype == np.uint8 and grey.shape == (5, N, 32, 32)
        # exactly the classifiers' luma, and severity s holds rows s*n .. (s+1)*n - 1
        expected = rgb_to_gray(rgb.transpose(0, 3, 1, 2)).reshape(5, N, 32, 32)
        np.testing.assert_array_equal(grey, expected)
        r, g, b = (rgb[2 * N + 3, 5, 7, i].astype(int) for i in range(3))
        assert grey[2, 3, 5, 7] == int(np.floor(0.299 * r + 0.587 * g + 0.114 * b + 0.5 + 1e-9))
    # the default asks for all 19 published corruptions
    with pytest.raises(C.CorruptionSetError, match="missing .*shot_noise.npy"):
        C.validate_folder(folder)


def _refused(folder, match, names=NAMES):
    with pytest.raises(C.CorruptionSetError, match=match):
        C.read_corruption_set(folder, names)


def test_every_malformed_folder_is_refused_naming_the_file(tmp_path):
    _refused(tmp_path / "nowhere", "no such folder")
    f = make_layout(tmp_path / "a")
    (f / "labels.npy").unlink()
    _refused(f, r"labels.npy: missing")
    f = make_layout(tmp_path / "b", names=NAMES[:2])
    _refused(f, r"missing saturate.npy")
    f = make_layout(tmp_path / "c")
    np.save(f / "gausian_noise.npy", np.zeros((5 * N, 32, 32, 3), np.uint8))
    _refused(f, r"files of no published corruption: gausian_noise.npy")
    with pytest.raises(C.CorruptionSetError, match="unknown corruption names"):
        C.validate_folder(make_layout(tmp_path / "c2"), ["fog", "haze"])
    f = make_layout(tmp_path / "d")
    np.save(f / "contrast.npy", np.zeros((5 * N, 32, 32, 3), np.float32))
    _refused(f, r"contrast.npy: dtype float32; expected uint8")
    f = make_layout(tmp_path / "e")
    np.save(f / "contrast.npy", np.zeros((5 * N, 32, 32, 1), np.uint8))
    _refused(f, r"contrast.npy: shape \(40, 32, 32, 1\); expected \(40, 32, 32, 3\)")
    f = make_layout(tmp_path / "f")
    np.save(f / "contrast.npy", np.zeros((5 * N - 1, 32, 32, 3), np.uint8))      # does not match the labels
    _refused(f, r"contrast.npy: shape \(39, 32, 32, 3\)")
    f = make_layout(tmp_path / "g")
    raw = (f / "saturate.npy").read_bytes()
    (f / "saturate.npy").write_bytes(raw[:-100])                                   # truncated
    _refused(f, r"saturate.npy: truncated")
    (f / "saturate.npy").write_bytes(raw + b"\0" * 10)                             # padded
    _refused(f, r"saturate.npy: longer than its header says")
    (f / "saturate.npy").write_bytes(b"not numpy at all")
    _refused(f, r"saturate.npy: not a readable .npy file")
    f = make_layout(tmp_path / "h")
    np.save(f / "contrast.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    _refused(f, r"contrast.npy: holds Python objects")
    f = make_layout(tmp_path / "i", labels=[0, 1, 2, 3, 4, 5, 6, 12])
    _refused(f, r"labels.npy: labels span 0..12, outside 0..9")
    f = make_layout(tmp_path / "j")
    labels = np.load(f / "labels.npy")
    labels[3 * N + 2] = (labels[3 * N + 2] + 1) % 10                               # severity 4 differs
    np.save(f / "labels.npy", labels)
    _refused(f, r"labels.npy: the labels of severities \[4\] differ")
    np.save(f / "labels.npy", labels.astype(np.float32))
    _refused(f, r"labels.npy: dtype float32; expected integer")
    np.save(f / "labels.npy", labels[:-1])
    _refused(f, r"labels.npy: shape \(39,\); expected \(5 n,\)")


def test_accuracy_per_severity_uses_the_clean_normalisation():
    """corruption_accuracy at each severity equals the accuracy the clean path (uint8 / 255) gives."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 12, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 12)
    acc = C.corruption_accuracy(net, images, labels, device="cpu")
    for s in range(5):
        with torch.no_grad():
            pred = net(torch.as_tensor(images[s], dtype=torch.float32)[:, None] / 255.0).argmax(1).numpy()
        assert acc[s] == pytest.approx(np.mean(pred == labels))
        assert acc[s] == pytest.approx(noise_accuracy(net, images[s], labels, [0.0])[0][0])
    with pytest.raises(ValueError, match="uint8"):
        C.corruption_accuracy(net, images.astype(np.float32), labels)


def test_local_corruption_functions_follow_their_formulas(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(20, 236, (6, 32, 32), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=3)
    for name in F.LOCAL:
        a = F.corrupt(grey, name, 3, seed=4)
        assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
        np.testing.assert_array_equal(a, F.corrupt(grey, name, 3, seed=4))        # seeded
        if name in ("contrast", "brightness", "pixelate", "gaussian_blur"):
            # the same operation on every channel: grey in, grey out (the luma of R = G = B is that value);
            # the noises draw per channel, as the authors' RGB code does, and the grey conversion mixes them
            np.testing.assert_array_equal(rgb_to_gray(a.transpose(0, 3, 1, 2)), a[..., 0])
    x = rgb / 255.0
    c = F.PARAMS["contrast"][4]
    m = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_array_equal(F.corrupt(grey, "contrast", 5), (np.clip((x - m) * c + m, 0, 1) * 255).astype(np.uint8))
    c = F.PARAMS["brightness"][1]                # grey pixels: HSV value = the grey level, saturation 0
    assert np.abs(F.corrupt(grey, "brightness", 2).astype(int) - (np.clip(x + c, 0, 1) * 255).astype(int)).max() <= 1
    noise = [np.std(F.corrupt(grey, "gaussian_noise", s, seed=1).astype(float) - rgb) for s in range(1, 6)]
    assert noise == sorted(noise) and noise[0] == pytest.approx(0.04 * 255, rel=0.15)
    hit = [np.mean(F.corrupt(grey, "impulse_noise", s, seed=1) != rgb) for s in range(1, 6)]
    assert hit == sorted(hit) and hit[-1] == pytest.approx(0.07, abs=0.02)
    with pytest.raises(KeyError, match="no local corruption function"):
        F.corrupt(grey, "frost", 1)
    # written in the published layout, read back by the validator
    labels = rng.integers(0, 10, 6)
    F.write_local_set(grey, labels, tmp_path / "local", corruptions=("contrast", "pixelate"))
    cset = C.read_corruption_set(tmp_path / "local", ["contrast", "pixelate"])
    np.testing.assert_array_equal(cset.labels, labels)
    np.testing.assert_array_equal(cset.images["contrast"][4], F.corrupt(grey, "contrast", 5)[..., 0])
