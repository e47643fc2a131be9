"""Turning results into what the database stores: JSON-ready values and torch.save bytes.

Shared by the schema modules (history and settings to `json` columns) and the trainers (network
and training-state bytes). Never imports datajoint; torch is imported only by the functions that
need it.

Format numbers: every torch.save payload of this package carries a "format" entry so that a reader
can refuse or convert an older layout. They are counted per payload kind, here in one place:

    PREDICTIVE_NETWORK_FORMAT   train_predictive.serialize_network (state_dict, config, n_neurons, ...)
    CLASSIFIER_NETWORK_FORMAT   classifier/network.serialize_classifier (2: + the running feature mean)
    TRAINING_STATE_FORMAT       training.TrainingState (a resumable checkpoint of either trainer)
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np

PREDICTIVE_NETWORK_FORMAT = 1
CLASSIFIER_NETWORK_FORMAT = 2
TRAINING_STATE_FORMAT = 1


def jsonable(value: Any) -> Any:
    """`value` with numpy scalars and arrays turned into plain Python numbers and lists, tuples into
    lists, mapping keys into strings and non-finite floats into their names ('nan', 'inf', '-inf':
    JSON has no such numbers), recursively: what a `json` column accepts."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def torch_bytes(payload: dict) -> bytes:
    """torch.save bytes of `payload` (tensors, numbers, strings, lists and dicts of them)."""
    import torch
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def torch_payload(blob: bytes) -> dict:
    """The dict `torch_bytes` wrote, loaded with weights_only=True (no code runs from the bytes),
    tensors on the CPU."""
    import torch
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


__all__ = ["PREDICTIVE_NETWORK_FORMAT", "CLASSIFIER_NETWORK_FORMAT", "TRAINING_STATE_FORMAT", "jsonable",
           "torch_bytes", "torch_payload"]
