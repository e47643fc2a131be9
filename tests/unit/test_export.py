"""compute/classifier/export.py: a ClassifierNet written with torch.export loads in a fresh interpreter
that cannot import neuralreg (isolated mode, no site packages processed: the editable install's
finder is not loaded; only the folder holding torch is put on sys.path) and gives the network's
logits for RGB input (luma inside, unrounded, gradients flowing to all three channels) and for
grayscale input. No database (tests/integration/test_export.py does the same from the table)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralreg_schema.compute.classifier import export
from neuralreg_schema.compute.classifier.network import ClassifierNet

CLEAN = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[1])                      # torch's folder only: no .pth files, no neuralreg finder
if importlib.util.find_spec("neuralreg_schema") is not None:
    print(json.dumps({"neuralreg_importable": True}))
    raise SystemExit(0)
import numpy as np, torch
extra = {"neuralreg.json": ""}
model = torch.export.load(sys.argv[2], extra_files=extra).module()
x = torch.as_tensor(np.load(sys.argv[3]))
x.requires_grad_(True)
logits = model(x)
logits[:, 0].sum().backward()
np.save(sys.argv[4], logits.detach().numpy())
np.save(sys.argv[5], x.grad.numpy())
print(json.dumps({"neuralreg_importable": False, "meta": json.loads(extra["neuralreg.json"])}))
"""


def torch_folder() -> str:
    return str(Path(torch.__file__).resolve().parents[1])


def run_clean(tmp_path: Path, model_path: Path, x: np.ndarray):
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", CLEAN, torch_folder(), str(model_path),
                          str(tmp_path / "x.npy"), str(tmp_path / "logits.npy"), str(tmp_path / "grad.npy")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    said = json.loads(out.stdout.strip().splitlines()[-1])
    assert said["neuralreg_importable"] is False
    return np.load(tmp_path / "logits.npy"), np.load(tmp_path / "grad.npy"), said["meta"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    n = ClassifierNet("resnet18", 10, 4).eval()
    with torch.no_grad():                          # non-trivial BatchNorm statistics
        for m in n.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return n


def test_rgb_export_loads_without_neuralreg_and_matches(net, tmp_path):
    path = export.export_classifier(net, tmp_path / "model.pt", input="rgb", metadata={"key": {"seed": 3}})
    rgb = np.random.default_rng(1).uniform(0, 1, (5, 3, 32, 32)).astype(np.float32)
    logits, grad, meta = run_clean(tmp_path, path, rgb)
    luma = np.tensordot(np.asarray(export.LUMA, np.float32), rgb, axes=([0], [1]))[:, None]   # unrounded
    with torch.no_grad():
        want = net(torch.as_tensor(luma))[0].numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    assert meta["key"] == {"seed": 3} and meta["input"]["channels"] == 3 and meta["output"] == "logits"
    # gradients reach every channel, in the luma proportions
    assert np.abs(grad).sum() > 0
    np.testing.assert_allclose(grad[:, 1], grad[:, 0] * (0.587 / 0.299), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(grad[:, 2], grad[:, 0] * (0.114 / 0.299), rtol=1e-4, atol=1e-8)


def test_gray_export_matches_any_batch_size(net, tmp_path):
    path = export.export_classifier(net, tmp_path / "gray.pt", input="gray")
    gray = np.random.default_rng(2).uniform(0, 1, (7, 1, 32, 32)).astype(np.float32)
    logits, grad, meta = run_clean(tmp_path, path, gray)
    with torch.no_grad():
        want = net(torch.as_tensor(gray))[0].numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
    assert meta["input"]["channels"] == 1 and grad.shape == gray.shape
    module, meta2 = export.load_exported(path)     # the same in this process, batch size 1
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.as_tensor(gray[:1])).numpy(), want[:1], rtol=1e-4, atol=1e-5)
    assert meta2 == meta


def test_a_bad_input_kind_is_refused(net, tmp_path):
    with pytest.raises(ValueError, match="input"):
        export.export_classifier(net, tmp_path / "x.pt", input="bgr")
    assert not list(tmp_path.iterdir())
