"""Model queries of an attack, counted by wrapping the model: `QueryCounter`. Pure PyTorch; never
imports datajoint.

A query is one image through the model: every row of a forward pass counts one forward query, and
every row of a gradient that flows back through the model to its input counts one gradient query
(a backward pass; `torch.autograd.grad` called twice on one forward counts twice). Counting rows at
the model, not iterations in the attack's loop, leaves nothing out: PGD's bisection attempts and the
forward pass that checks each of them, Carlini-Wagner's binary-search rounds, the DDN run that
starts Brendel-Bethge (and its re-check), foolbox's own success checks, JSMA's and SparseFool's
inner forward and backward passes are all rows through the wrapped model.

compute/evaluation/attacks.run_attack wraps the network for the attack's own calls only; its
harness (the clean predictions and the re-check of every claimed adversarial, one forward row per
attacked sample per run) stays uncounted, since it is the evaluation protocol's, not the attack's.
A gradient with respect to the parameters alone (training) is not counted: only gradients that
reach the input do.
"""
from __future__ import annotations

import torch
from torch import nn


class QueryCounter(nn.Module):
    """`model` with row counters: `forward_rows` (rows of every forward pass) and `gradient_rows`
    (rows of every gradient that reached the input through the model). `counts()` -> both;
    `reset()` sets both to 0. The output is the model's, unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)
        self.forward_rows = 0
        self.gradient_rows = 0

    def _backward(self, grad):
        self.gradient_rows += int(grad.shape[0]) if grad.ndim else 1
        return grad

    def forward(self, x, *args, **kwargs):
        self.forward_rows += int(x.shape[0]) if x.ndim else 1
        if x.requires_grad and torch.is_grad_enabled():
            # fires once per backward pass that computes the gradient with respect to x (or anything
            # upstream of it): a gradient query of x.shape[0] rows
            x = x.view_as(x)
            x.register_hook(self._backward)
        return self.model(x, *args, **kwargs)

    def counts(self) -> tuple[int, int]:
        return int(self.forward_rows), int(self.gradient_rows)

    def reset(self) -> None:
        self.forward_rows = self.gradient_rows = 0


__all__ = ["QueryCounter"]
