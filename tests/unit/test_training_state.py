"""compute/common/training.py: the symmetric TrainingState, `resume`'s choice of a checkpoint, the trainer
contract of both trainers, and the predictive trainer's resume (an interrupted run ends identical to
an uninterrupted one on the CPU)."""
import numpy as np
import pytest
import torch

from neuralreg_schema.compute.common import serialization
from neuralreg_schema.compute.classifier import train as tc
from neuralreg_schema.compute.predictive import train as tp
from neuralreg_schema.compute.experiment.simulate import simulate_experiment
from neuralreg_schema.compute.common.training import TrainerResult, TrainingState, resume
from tests.helpers import MemoryCheckpoint




def _state(epoch=2):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    return TrainingState(epoch=epoch, identity={"config": {"lr": 0.1, "layers": [1, 5]}, "seed": 3, "data": "ab"},
                         model=net.state_dict(), optimizer=opt.state_dict(),
                         history=[{"epoch": 1, "loss": 0.5, "gamma": None}],
                         rng={"numpy": np.random.default_rng(7).bit_generator.state, "torch": torch.get_rng_state()},
                         extra={"best": {"w": torch.arange(3.0)}, "counter": 2})


def test_training_state_round_trip_is_symmetric():
    state = _state()
    back = TrainingState.from_bytes(state.to_bytes())
    assert back.epoch == 2 and back.identity == state.identity and back.history == state.history
    assert back.scheduler is None and back.extra["counter"] == 2
    for k, v in state.model.items():
        assert torch.equal(back.model[k], v)
    assert back.optimizer["param_groups"] == state.optimizer["param_groups"]
    for i, s in state.optimizer["state"].items():
        assert all(torch.equal(back.optimizer["state"][i][k], s[k]) for k in s)
    assert back.rng["numpy"] == state.rng["numpy"] and torch.equal(back.rng["torch"], state.rng["torch"])
    assert torch.equal(back.extra["best"]["w"], torch.arange(3.0))
    # the numpy generator continues where it was
    g = np.random.default_rng(0)
    g.bit_generator.state = back.rng["numpy"]
    assert g.random() == np.random.default_rng(7).random()


def test_other_payloads_are_not_training_states():
    with pytest.raises(ValueError, match="not a training state"):
        TrainingState.from_bytes(serialization.torch_bytes({"format": 99, "epoch": 1}))


def test_resume_takes_only_a_state_of_the_same_run():
    state = _state(epoch=2)
    said = []
    got = resume(MemoryCheckpoint(state.to_bytes()), state.identity, 5, said.append)
    assert got is not None and got.epoch == 2 and "resuming after epoch 2 of 5" in said[-1]
    assert resume(None, state.identity, 5, said.append) is None
    assert resume(MemoryCheckpoint(), state.identity, 5, said.append) is None
    assert resume(MemoryCheckpoint(state.to_bytes()), {**state.identity, "seed": 4}, 5, said.append) is None
    assert "another config, seed or data" in said[-1]
    assert resume(MemoryCheckpoint(state.to_bytes()), state.identity, 2, said.append) is None      # nothing left to train
    assert resume(MemoryCheckpoint(b"not a checkpoint"), state.identity, 5, said.append) is None
    assert "unreadable checkpoint" in said[-1]


@pytest.fixture(scope="module")
def tiny_scan():
    exp = simulate_experiment("tiny", 0)
    return tp.PredictiveData.from_recording(exp.image_set, exp.scans[1])


def _plain(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_interrupted_predictive_training_resumes_identical(tiny_scan):
    cfg = tp.default_config("tiny")
    whole = tp.train_predictive(tiny_scan, cfg, seed=0, device="cpu")
    assert len(whole.history) > 4          # the interruption below falls inside the run
    memory = MemoryCheckpoint(fail_after=3)
    with pytest.raises(RuntimeError, match="worker killed"):
        tp.train_predictive(tiny_scan, cfg, seed=0, device="cpu", checkpoint=memory)
    assert TrainingState.from_bytes(memory.blob).epoch == 3
    memory.fail_after = None
    said = []
    resumed = tp.train_predictive(tiny_scan, cfg, seed=0, device="cpu", checkpoint=memory, progress=said.append)
    assert resumed.resumed_from_epoch == 3 and whole.resumed_from_epoch == 0
    assert "resuming after epoch 3" in said[0] and said[1].startswith("epoch 4/")
    assert _plain(resumed.history) == _plain(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    for name in ("val_corr", "test_corr", "oracle_corr", "predictions"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)
    a, b = tp.load_network(whole.state).state_dict(), tp.load_network(resumed.state).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint of another seed or other data is ignored: the run starts over
    for other in (dict(seed=1, data=tiny_scan),
                  dict(seed=0, data=tp.PredictiveData(**{**vars(tiny_scan),
                                                         "responses": tiny_scan.responses * 1.5}))):
        said = []
        run = tp.train_predictive(other["data"], cfg, seed=other["seed"], device="cpu",
                                  checkpoint=MemoryCheckpoint(memory.blob), progress=said.append)
        assert run.resumed_from_epoch == 0 and "another config, seed or data" in said[0]


def test_both_trainers_keep_the_contract(tiny_scan):
    result = tp.train_predictive(tiny_scan, {**tp.default_config("tiny"), "max_epochs": 1}, seed=0, device="cpu")
    assert isinstance(result, TrainerResult) and result.score == pytest.approx(float(np.mean(result.test_corr)))
    clf = tc.ClassifierResult(state=b"", history=[], test_accuracy=0.75, train_accuracy=0.5, gamma=None, layers=[],
                              initial_heldout_loss=None, heldout_loss=None, n_parameters=1, n_stimuli_train=0,
                              n_stimuli_heldout=0, pairs_per_step=0, resumed_from_epoch=0, device="cpu",
                              seconds=1.0)
    assert isinstance(clf, TrainerResult) and clf.score == 0.75
