"""Temporary train/eval modes of a network, restored afterwards: one place for the context managers
that the trainers, the attacks and the noise evaluation use (never imports datajoint).

    eval_mode(model)               every module in eval mode (BatchNorm on its running statistics,
                                   no dropout): how a trained network is tested and attacked
    batchnorm_eval(module)         only the BatchNorm layers in eval mode (running statistics used,
                                   not updated); the rest of the network keeps its mode
    batchnorm_batch_stats(module)  BatchNorm normalises by the current batch (train mode) but leaves
                                   its running statistics and batch counter unchanged (momentum 0)

Each restores every module's mode (and, for batchnorm_batch_stats, the momentum and batch counter)
on exit, also when the block raises.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with every module in eval mode for the block; each module's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


@contextmanager
def batchnorm_eval(module: nn.Module) -> Iterator[None]:
    """Every BatchNorm layer in eval mode (running statistics used, not updated); restored after."""
    bns = _batchnorms(module)
    modes = [m.training for m in bns]
    for m in bns:
        m.train(False)
    try:
        yield
    finally:
        for m, mode in zip(bns, modes):
            m.train(mode)


@contextmanager
def batchnorm_batch_stats(module: nn.Module) -> Iterator[None]:
    """Every BatchNorm layer normalises by the current batch (train mode) but leaves its running
    statistics unchanged (momentum 0); restored after."""
    bns = _batchnorms(module)
    saved = [(m.training, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in bns]
    for m in bns:
        m.train(True)
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mode, momentum, tracked) in zip(bns, saved):
            m.train(mode)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


__all__ = ["eval_mode", "batchnorm_eval", "batchnorm_batch_stats"]
