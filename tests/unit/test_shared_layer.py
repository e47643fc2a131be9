"""The shared small layer: one config hash (stable content addresses), one jsonable, one TrainingError,
the temporary-mode context managers of compute/common/modes.py, and no private helper imported across
modules of the package."""
import ast
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralreg_schema import hashing
from neuralreg_schema.compute.common import errors, modes, serialization
from neuralreg_schema.compute.classifier import train as train_classifier
from neuralreg_schema.compute.predictive import train as train_predictive

PACKAGE = Path(__file__).resolve().parents[2] / "neuralreg_schema"


def test_config_hash_is_the_stored_content_address():
    config = {"lr": 0.1, "layers": [1, 5], "name": "demo"}
    expected = hashlib.md5(b'{"layers":[1,5],"lr":0.1,"name":"demo"}').hexdigest()     # rows hashed so far
    assert hashing.config_hash(config) == expected
    assert hashing.config_hash(dict(reversed(list(config.items())))) == expected
    assert hashing.config_hash({**config, "lr": 0.2}) != expected


def test_jsonable_gives_what_a_json_column_takes():
    value = {1: np.float32(0.5), "a": (np.int64(3), np.arange(2)), "b": [float("nan"), np.float64(np.inf), -math.inf]}
    out = serialization.jsonable(value)
    assert out == {"1": 0.5, "a": [3, [0, 1]], "b": ["nan", "inf", "-inf"]}
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_one_training_error_for_both_trainers():
    assert train_predictive.TrainingError is errors.TrainingError is train_classifier.TrainingError


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Dropout(0.5))


def test_eval_mode_restores_every_module_even_on_error():
    net = _net().train()
    net[2].eval()                                   # mixed modes come back as they were
    with pytest.raises(RuntimeError):
        with modes.eval_mode(net):
            assert not any(m.training for m in net.modules())
            raise RuntimeError("inside")
    assert [m.training for m in net.modules()] == [True, True, True, False]


def test_batchnorm_contexts_use_and_keep_the_right_statistics():
    net = _net().train()
    x = torch.randn(4, 1, 6, 6) * 3 + 1
    bn = net[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    with modes.batchnorm_batch_stats(net):
        net(x)
        assert bn.training and bn.momentum == 0.0
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2] and bn.momentum == 0.1 and bn.training
    with modes.batchnorm_eval(net):
        assert not bn.training and net[2].training        # only BatchNorm changes mode
        net(x)
    assert bn.training and torch.equal(bn.running_mean, before[0])


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            own = isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("neuralreg_schema"))
            if own:
                offenders += [f"{path.relative_to(PACKAGE)}: {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []
