"""foolbox 3's PGD and Adam-PGD (Linf, L2) with a per-sample epsilon: the patches that let
compute/evaluation/attacks.minimal_epsilon_search bisect every sample's epsilon at once. Never imports datajoint.

foolbox's `run(model, inputs, criterion, *, epsilon)` takes one float epsilon for the whole batch.
The subclasses here accept an eagerpy tensor of shape (N, 1, 1, 1) as well: foolbox's step size
(rel_stepsize * epsilon), Adam optimizer and loop work unchanged with it; only the random start
and the projection are rewritten to broadcast per sample. A float epsilon still works, and gives
what foolbox's own class gives.

    per_sample_class("LinfProjectedGradientDescentAttack")   -> the patched subclass of that class

foolbox is imported when a class is first asked for (the classes are built once per process).
"""
from __future__ import annotations

PATCHED = ("LinfProjectedGradientDescentAttack", "L2ProjectedGradientDescentAttack",
           "LinfAdamProjectedGradientDescentAttack", "L2AdamProjectedGradientDescentAttack")

_CLASSES: dict = {}


def _build_classes() -> dict:
    """The four patched subclasses by the name of the foolbox class they extend."""
    import eagerpy as ep
    from foolbox import attacks as fa
    from foolbox.attacks.gradient_descent_base import uniform_l2_n_balls
    from foolbox.devutils import atleast_kd, flatten

    class LinfMixin:
        def get_random_start(self, x0, epsilon):
            return x0 + epsilon * ep.uniform(x0, x0.shape, -1.0, 1.0)

        def project(self, x, x0, epsilon):
            if not isinstance(epsilon, ep.Tensor):
                return x0 + ep.clip(x - x0, -epsilon, epsilon)
            return x0 + ep.minimum(ep.maximum(x - x0, -epsilon), epsilon)

    class L2Mixin:
        def get_random_start(self, x0, epsilon):
            n, d = flatten(x0).shape
            return x0 + epsilon * uniform_l2_n_balls(x0, n, d).reshape(x0.shape)

        def project(self, x, x0, epsilon):
            delta = x - x0
            norms = ep.maximum(flatten(delta).norms.l2(axis=-1), 1e-12)
            eps = epsilon.reshape((len(x0),)) if isinstance(epsilon, ep.Tensor) else epsilon
            factor = ep.minimum(1, eps / norms)
            return x0 + delta * atleast_kd(factor, x0.ndim)

    class LinfPGD(LinfMixin, fa.LinfProjectedGradientDescentAttack):
        pass

    class L2PGD(L2Mixin, fa.L2ProjectedGradientDescentAttack):
        pass

    class LinfAdamPGD(LinfMixin, fa.LinfAdamProjectedGradientDescentAttack):
        pass

    class L2AdamPGD(L2Mixin, fa.L2AdamProjectedGradientDescentAttack):
        pass

    return {"LinfProjectedGradientDescentAttack": LinfPGD, "L2ProjectedGradientDescentAttack": L2PGD,
            "LinfAdamProjectedGradientDescentAttack": LinfAdamPGD,
            "L2AdamProjectedGradientDescentAttack": L2AdamPGD}


def per_sample_class(foolbox_class: str):
    """The subclass of foolbox's `foolbox_class` (one of PATCHED) whose epsilon may be per sample."""
    if foolbox_class not in PATCHED:
        raise KeyError(f"no per-sample-epsilon version of {foolbox_class!r}; patched: {', '.join(PATCHED)}")
    if not _CLASSES:
        _CLASSES.update(_build_classes())
    return _CLASSES[foolbox_class]


__all__ = ["PATCHED", "per_sample_class"]
