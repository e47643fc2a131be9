"""The contract every trainer of this package keeps, and the one resumable training state they save.

Contract (nnfabrik's `trainer(model, dataloaders, seed, **config) -> (score, output, state)`, with
the data already on arrays and the network built by the trainer from the config):

    result = trainer(data, [target,] config, seed, *, progress=None, device=None, checkpoint=None)

    data        the validated input arrays (train_predictive.PredictiveData,
                classifier/data.ClassificationData; the classifier also takes its similarity target)
    config      a dict completed and checked by the trainer's `check_config` (unknown keys refused)
    seed        every random draw of the run follows from it (torch and numpy generators seeded)
    progress    called with one line per stage and epoch
    device      None: CUDA when available, else the CPU (runtime.resolve_device)
    checkpoint  a `Checkpoint`: after every finished epoch the trainer saves a `TrainingState`
                through it, and at start it resumes from a saved state of the same run (same
                config, seed and data fingerprints); a state of another run is ignored, and said so

    result      a `TrainerResult`: `score` (the run's headline number on held-out data), `history`
                (one dict per epoch), `state` (torch.save bytes of the final network, what the
                trainer's loader reads), `resumed_from_epoch`, `device`, `seconds`, plus what the
                trainer measures besides

Trainers raise errors.TrainingError for a diverged run, a ValueError subclass for unusable data or
config, and never import datajoint: the schema modules fetch, call, insert.

`TrainingState` holds what a trainer needs to continue after an epoch as if it had not stopped:
the network's and the optimizer's state dicts, the scheduler's (if any), generator states, the
epoch count and the history, and an `extra` dict for what is the trainer's own (the classifier's
layer weights and running feature mean, the predictive trainer's best state and early-stopping
counters). `identity` names the run the state belongs to. `to_bytes` / `from_bytes` are symmetric:
`TrainingState.from_bytes(s.to_bytes())` equals `s` field by field (tensors on the CPU), and the
bytes load with torch's weights_only unpickler, so no code runs from a checkpoint file.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Callable, Optional, Protocol, TypeVar, runtime_checkable

from .serialization import TRAINING_STATE_FORMAT, torch_bytes, torch_payload

T = TypeVar("T")


class Checkpoint(Protocol):
    """Where a trainer keeps its latest `TrainingState` bytes, and attacks.run_attack its progress
    (checkpoints.StoreCheckpoint: the object store; tests: memory). `load` returns None when nothing
    was saved."""

    def load(self) -> bytes | None: ...

    def save(self, state: bytes) -> None: ...


@runtime_checkable
class TrainerResult(Protocol):
    """What every trainer returns (see the module docstring)."""

    history: list
    state: bytes
    resumed_from_epoch: int
    device: str
    seconds: float

    @property
    def score(self) -> float: ...


@dataclass
class TrainingState:
    """A resumable snapshot after `epoch` finished epochs (see the module docstring)."""

    epoch: int                            # finished epochs; training continues with the next one
    identity: dict                        # config, seed, data fingerprints: the run this belongs to
    model: dict                           # the network's state_dict
    optimizer: dict                       # the optimizer's state_dict
    history: list = field(default_factory=list)     # one dict per finished epoch
    scheduler: Optional[dict] = None      # a learning-rate scheduler's state_dict, if the trainer has one
    rng: dict = field(default_factory=dict)         # generator states the next epoch's draws continue from
    extra: dict = field(default_factory=dict)       # the trainer's own state (see the module docstring)

    def to_bytes(self) -> bytes:
        """torch.save bytes of every field and the format number."""
        return torch_bytes({"format": TRAINING_STATE_FORMAT,
                            **{f.name: getattr(self, f.name) for f in fields(self)}})

    @classmethod
    def from_bytes(cls, blob: bytes) -> "TrainingState":
        """The state `to_bytes` wrote (tensors on the CPU); ValueError for another format."""
        payload = torch_payload(blob)
        if not isinstance(payload, dict) or payload.get("format") != TRAINING_STATE_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"not a training state of format {TRAINING_STATE_FORMAT} (found {found!r})")
        return cls(**{f.name: payload[f.name] for f in fields(cls) if f.name in payload})


def named_config(configs: dict[str, dict], name: str, kind: str) -> dict:
    """A copy of the recipe `name` of a trainer's CONFIGS; KeyError naming the known ones."""
    if name not in configs:
        raise KeyError(f"unknown {kind} config {name!r}; known: {', '.join(configs)}")
    return copy.deepcopy(configs[name])


def with_defaults(config: dict, defaults: dict, kind: str) -> dict:
    """`config` completed with a copy of the trainer's `defaults`; ValueError for a key the trainer
    does not know (the first step of every trainer's check_config)."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {kind} config keys {unknown}; known: {sorted(defaults)}")
    return {**copy.deepcopy(defaults), **config}


def read_checkpoint(checkpoint: Checkpoint | None, decode: Callable[[bytes], T], say: Callable[[str], None],
                    restart: str) -> T | None:
    """`decode` of the bytes saved in `checkpoint`, or None: no checkpoint, nothing saved, or bytes
    that do not decode (an older layout or a damaged file: ignored, and said so, ending with
    `restart`, e.g. 'training from epoch 0'; never a crash). Shared by `resume` and the attacks."""
    blob = checkpoint.load() if checkpoint is not None else None
    if blob is None:
        return None
    try:
        return decode(blob)
    except Exception as error:          # noqa: BLE001 - any unreadable checkpoint means: start over
        say(f"ignoring an unreadable checkpoint ({type(error).__name__}: {error}); {restart}")
        return None


def resume(checkpoint: Checkpoint | None, identity: dict, epochs: int,
           say: Callable[[str], None]) -> TrainingState | None:
    """The saved state of this run (same `identity`) with fewer than `epochs` finished epochs, or
    None: nothing saved, or a state of another run, format or length (ignored, and said so)."""
    state = read_checkpoint(checkpoint, TrainingState.from_bytes, say, "training from epoch 0")
    if state is None:
        return None
    if state.identity != identity or not 0 < int(state.epoch) < int(epochs):
        say("ignoring a checkpoint made with another config, seed or data; training from epoch 0")
        return None
    say(f"resuming after epoch {state.epoch} of {epochs} from the checkpoint")
    return state


__all__ = ["Checkpoint", "TrainerResult", "TrainingState", "named_config", "read_checkpoint", "resume",
           "with_defaults"]
