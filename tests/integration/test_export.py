"""`neuralreg export` on a tiny trained classifier: the file it writes loads in a fresh interpreter that
cannot import neuralreg (tests/unit/test_export.CLEAN: isolated mode, torch's folder only) and gives
the logits of the table's network (`RegularizedClassifier().network(key)`) for RGB input (luma inside,
gradients reaching every channel) and for grayscale input; the key, the config and the code version
travel with it. A key that selects no classifier is refused, and nothing is written. Real processes,
a fresh schema prefix (dropped afterwards)."""
import json

import numpy as np

from tests.helpers import cli, run_python
from tests.unit.test_export import run_clean

SCRIPT = """
import json, sys
import numpy as np, torch
from neuralreg_schema import pipeline
m = pipeline.activate(sys.argv[1])
clf = m["classifier"]
if sys.argv[2] == "plan":
    clf.ClassifierPlan.add(clf.ClassificationDataset.add("offline"),
                           clf.ClassifierConfig.add("tiny", name="export-test", epochs=1, width=8, max_train=256),
                           clf.Regularizer.add("none"), [0])
    clf.RegularizedClassifier.populate()
    key = clf.RegularizedClassifier.keys()[0]
    print(json.dumps({k: (int(v) if k == "seed" else v) for k, v in key.items()}))
else:
    key = json.loads(sys.argv[3])
    net = clf.RegularizedClassifier().network(key)
    x = torch.as_tensor(np.load(sys.argv[4]))
    with torch.no_grad():
        np.save(sys.argv[5], net(x)[0].numpy())
"""


def test_export_loads_without_neuralreg_and_gives_the_tables_logits(fresh_prefix, tmp_path):
    out = run_python(["-c", SCRIPT, fresh_prefix, "plan"], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    key = json.loads(out.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, (6, 3, 32, 32)).astype(np.float32)
    gray = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None].astype(np.float32)
    np.save(tmp_path / "gray_in.npy", gray)
    out = run_python(["-c", SCRIPT, fresh_prefix, "logits", json.dumps(key), str(tmp_path / "gray_in.npy"),
                      str(tmp_path / "want.npy")], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    want = np.load(tmp_path / "want.npy")
    args = [f"{k}={v}" for k, v in key.items()]
    for kind, x in (("rgb", rgb), ("gray", gray)):
        path = tmp_path / f"model-{kind}.pt2"
        out = cli(fresh_prefix, "export", "--key", *args, "--out", str(path), "--input", kind, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        logits, grad, meta = run_clean(tmp_path, path, x)
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
        assert meta["key"] == key and meta["config_name"] == "export-test" and meta["config"]["width"] == 8
        assert meta["code_version"] and meta["input"]["channels"] == (3 if kind == "rgb" else 1)
        assert np.abs(grad).sum() > 0
        if kind == "rgb":
            np.testing.assert_allclose(grad[:, 1], grad[:, 0] * (0.587 / 0.299), rtol=1e-4, atol=1e-8)
    out = cli(fresh_prefix, "export", "--key", "seed=7", "--out", str(tmp_path / "none.pt2"), timeout=300)
    assert out.returncode == 1 and "selects 0 classifiers" in out.stderr
    assert not (tmp_path / "none.pt2").exists()
    out = cli(fresh_prefix, "export", "--key", "seed=x", "--out", str(tmp_path / "none.pt2"), timeout=300)
    assert out.returncode == 1 and "whole number" in out.stderr
