"""VGG19 features for the 'VGG' control: weights lookup (path, env var, hub cache, torch's download
from a local file:// URL, offline failure) and the network against a direct torch computation.
Weights are small random tensors with torchvision's names and shapes, never downloaded."""
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralreg_schema.compute.similarity import rsa
from neuralreg_schema.compute.similarity import vgg

# torchvision vgg19 features indices of the convolutions up to conv3_1, with (out, in) channels
CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128)}


def make_state(seed=0, upto=10):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, (c_out, c_in) in CONVS.items():
        if index <= upto:
            scale = (2 / (9 * c_in)) ** 0.5                             # He initialisation
            state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) * scale
            state[f"features.{index}.bias"] = torch.randn(c_out, generator=g) * 0.05
    return state


@pytest.fixture(scope="module")
def state():
    return make_state()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("weights") / "vgg19-small.pth"
    torch.save(state, path)
    return path


@pytest.fixture(autouse=True)
def no_user_weights(monkeypatch, tmp_path):
    """No env var from the caller's shell, and a torch hub dir inside tmp_path."""
    monkeypatch.delenv(vgg.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def images(n=4, seed=0, shape=(36, 64)):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


def same_state(a, b):
    assert set(a) >= set(b)
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


# ---- layer table and network ---------------------------------------------------------------------

def test_layer_names_map_to_torchvision_indices():
    assert vgg.LAYERS["conv1_1"] == 1 and vgg.LAYERS["conv1_2"] == 3 and vgg.LAYERS["pool1"] == 4
    assert vgg.LAYERS["conv2_1"] == 6 and vgg.LAYERS["conv2_2"] == 8 and vgg.LAYERS["pool2"] == 9
    assert vgg.LAYERS["conv3_1"] == 11 and vgg.LAYERS["conv3_4"] == 17 and vgg.LAYERS["pool3"] == 18
    assert vgg.LAYERS["conv4_1"] == 20 and vgg.LAYERS["conv5_4"] == 35 and vgg.LAYERS["pool5"] == 36
    assert len([k for k in vgg.LAYERS if k.startswith("conv")]) == 16
    assert set(vgg.required_keys("conv3_1")) == {f"features.{i}.{p}" for i in CONVS for p in ("weight", "bias")}
    assert vgg.required_keys("conv5_4")["features.34.weight"] == (512, 512, 3, 3)
    full = vgg.VGG19Features("pool5")
    assert len(full.features) == 37
    assert {k for k in full.state_dict()} == set(vgg.required_keys("pool5"))
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        vgg.VGG19Features("conv6_1")


def direct_features(imgs, state, upto):
    """Preprocessing and conv -> relu -> conv -> relu -> pool ... written out by hand."""
    x = torch.from_numpy(imgs).float()[:, None] / 255.0
    x = x.repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x - mean) / std
    steps = {}
    def conv(x, i):
        return F.relu(F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))
    x = conv(x, 0); steps["conv1_1"] = x
    x = conv(x, 2); steps["conv1_2"] = x
    x = F.max_pool2d(x, 2); steps["pool1"] = x
    x = conv(x, 5); steps["conv2_1"] = x
    x = conv(x, 7); steps["conv2_2"] = x
    x = F.max_pool2d(x, 2); steps["pool2"] = x
    x = conv(x, 10); steps["conv3_1"] = x
    return steps[upto].flatten(1).numpy()


@pytest.mark.parametrize("layer, dim", [("conv1_1", 64 * 36 * 64), ("conv1_2", 64 * 36 * 64),
                                        ("pool1", 64 * 18 * 32), ("conv2_1", 128 * 18 * 32),
                                        ("conv2_2", 128 * 18 * 32), ("pool2", 128 * 9 * 16),
                                        ("conv3_1", 256 * 9 * 16)])
def test_features_match_direct_torch(state, layer, dim):
    imgs = images(3)
    got = vgg.vgg_features(imgs, state, layer, batch_size=2)
    assert got.dtype == np.float32 and got.shape == (3, dim)
    np.testing.assert_allclose(got, direct_features(imgs, state, layer), rtol=1e-4, atol=1e-4)
    assert (got >= 0).all()                       # rectified outputs


def test_feature_input_forms_and_upsample(state):
    imgs = images(2)
    a = vgg.vgg_features(imgs, state)
    np.testing.assert_array_equal(vgg.vgg_features(imgs[:, None], state), a)
    np.testing.assert_array_equal(vgg.vgg_features(imgs.astype(np.uint8), state),
                                  vgg.vgg_features(imgs.astype(np.uint8).astype(np.float32), state))
    assert vgg.vgg_features(imgs, state, upsample=2).shape == (2, 256 * 18 * 32)
    for bad, message in [(imgs * 2, "0..255"), (imgs[0], "gray levels"), (imgs - 1, "0..255"),
                         (np.full((1, 36, 64), np.nan), "NaN")]:
        with pytest.raises(ValueError, match=message):
            vgg.vgg_features(bad, state)
    with pytest.raises(ValueError, match="batch_size"):
        vgg.vgg_features(imgs, state, batch_size=0)


def test_vgg_similarity(state):
    imgs = images(6, seed=1)
    S = vgg.vgg_similarity(imgs, state, block=4)
    assert S.dtype == np.float32 and S.shape == (6, 6)
    np.testing.assert_array_equal(S, S.T)
    np.testing.assert_array_equal(np.diagonal(S), 1.0)
    np.testing.assert_allclose(S, rsa.similarity(vgg.vgg_features(imgs, state)), atol=1e-6)


def test_state_validation(state):
    extra = dict(state, **{"classifier.0.weight": torch.zeros(2, 2)})
    model = vgg.VGG19Features.from_state(extra, "conv3_1")       # extra keys ignored (strict=False)
    same_state(model.state_dict(), state)
    missing = {k: v for k, v in state.items() if k != "features.7.bias"}
    with pytest.raises(vgg.VGGWeightsError, match="features.7.bias"):
        vgg.vgg_features(images(1), missing)
    vgg.VGG19Features.from_state(missing, "pool1")                # not needed that far
    wrong = dict(state, **{"features.5.weight": torch.zeros(128, 32, 3, 3)})
    with pytest.raises(vgg.VGGWeightsError, match=r"features.5.weight.*\(128, 32, 3, 3\).*\(128, 64, 3, 3\)"):
        vgg.validate_state(wrong)
    with pytest.raises(vgg.VGGWeightsError, match="features.12.weight"):
        vgg.validate_state(state, "conv3_2")
    with pytest.raises(vgg.VGGWeightsError, match="state dict"):
        vgg.validate_state([1, 2])


# ---- where the weights come from -------------------------------------------------------------------

def test_load_by_path(weights_file, state):
    same_state(vgg.load_vgg19_state(str(weights_file), allow_download=False), state)
    loaded, source = vgg.load_vgg19_state(weights_file, allow_download=False, with_source=True)
    assert str(weights_file) in source
    with pytest.raises(vgg.VGGWeightsError, match="does not exist"):
        vgg.load_vgg19_state(str(weights_file) + ".missing")


def test_load_by_env_var(weights_file, state, monkeypatch):
    monkeypatch.setenv(vgg.WEIGHTS_ENV, str(weights_file))
    loaded, source = vgg.load_vgg19_state(allow_download=False, with_source=True)
    same_state(loaded, state)
    assert vgg.WEIGHTS_ENV in source
    monkeypatch.setenv(vgg.WEIGHTS_ENV, "/nonexistent/vgg19.pth")
    with pytest.raises(vgg.VGGWeightsError, match=f"/nonexistent/vgg19.pth.*{vgg.WEIGHTS_ENV}"):
        vgg.load_vgg19_state()


def test_load_from_hub_cache(weights_file, state, tmp_path):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"              # TORCH_HOME set by the fixture
    assert torch.hub.get_dir() == str(tmp_path / "torch_home" / "hub")
    cache.mkdir(parents=True)
    (cache / "vgg19-dcbb9e9d.pth").write_bytes(weights_file.read_bytes())
    loaded, source = vgg.load_vgg19_state(allow_download=False, with_source=True)
    same_state(loaded, state)
    assert "cache" in source and str(cache) in source
    # an explicit model_dir replaces the hub cache
    other = tmp_path / "models"
    other.mkdir()
    (other / "vgg19-dcbb9e9d.pth").write_bytes(weights_file.read_bytes())
    same_state(vgg.load_vgg19_state(model_dir=str(other), allow_download=False), state)


def test_unreadable_or_wrong_file_is_reported(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(vgg.VGGWeightsError, match="cannot read"):
        vgg.load_vgg19_state(str(bad))
    partial = tmp_path / "partial.pth"
    torch.save(make_state(upto=5), partial)                        # stops before conv2_2
    with pytest.raises(vgg.VGGWeightsError, match="features.7.weight"):
        vgg.load_vgg19_state(str(partial))
    vgg.load_vgg19_state(str(partial), layer="conv2_1")


def test_download_through_torch_hub_from_file_url(weights_file, state, tmp_path):
    """torch.hub.load_state_dict_from_url reads file:// URLs with urllib, so the real download path,
    including the sha256-prefix check of the file name, runs without a network."""
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    served = tmp_path / "served"
    served.mkdir()
    source_file = served / f"vgg19-{digest[:8]}.pth"
    source_file.write_bytes(weights_file.read_bytes())
    model_dir = tmp_path / "download_cache"
    loaded, source = vgg.load_vgg19_state(url=source_file.as_uri(), model_dir=str(model_dir),
                                          with_source=True)
    same_state(loaded, state)
    assert (model_dir / source_file.name).is_file() and "downloaded" in source
    # second call: served from the cache even with downloads disallowed
    source_file.unlink()
    same_state(vgg.load_vgg19_state(url=source_file.as_uri(), model_dir=str(model_dir),
                                    allow_download=False), state)
    # a file whose hash does not match the name is refused (and not left in the cache)
    wrong = served / "vgg19-00000000.pth"
    wrong.write_bytes(weights_file.read_bytes())
    with pytest.raises(vgg.VGGWeightsError, match="invalid hash"):
        vgg.load_vgg19_state(url=wrong.as_uri(), model_dir=str(model_dir))
    assert not (model_dir / wrong.name).exists()


def test_offline_failure_is_helpful(tmp_path):
    url = "http://127.0.0.1:9/vgg19-00000000.pth"
    with pytest.raises(vgg.VGGWeightsError) as failure:
        vgg.load_vgg19_state(url=url, model_dir=str(tmp_path / "c"))
    message = str(failure.value)
    for part in ("downloading http://127.0.0.1:9/vgg19-00000000.pth failed", vgg.WEIGHTS_ENV,
                 str(tmp_path / "c" / "vgg19-00000000.pth"), "Tried"):
        assert part in message, message
    with pytest.raises(vgg.VGGWeightsError, match="allow_download=False") as failure:
        vgg.load_vgg19_state(allow_download=False)
    message = str(failure.value)
    assert vgg.WEIGHTS_ENV in message and "vgg19-dcbb9e9d.pth" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert isinstance(failure.value, RuntimeError)
