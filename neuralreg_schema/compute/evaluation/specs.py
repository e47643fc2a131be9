"""Typed attack specifications: what each attack of the robustness evaluation is and which options it
takes. Pure Python (foolbox is imported only when an attack object is built); never imports datajoint.

Options (foolbox's own style: keyword-only typed options). Each attack family is a frozen dataclass
whose fields are the family's options with their types and defaults:

    DDN              init_epsilon, steps, gamma                              foolbox DDNAttack
    FMN              steps, max_stepsize, gamma, binary_search_steps;        foolbox L0/L1/L2/LInfFMNAttack
                     init, init_steps (the attack whose adversarials start FMN; None: the image)
    CarliniWagner    binary_search_steps, steps, stepsize, confidence,       foolbox L2CarliniWagnerAttack
                     initial_const, abort_early
    BrendelBethge    steps, lr, lr_decay, lr_num_decay, momentum, overshoot, foolbox L0/L1/L2/LinfinityBrendelBethgeAttack
                     binary_search_steps; init, init_steps (its start: another attack's adversarials)
    PGD              rel_stepsize, abs_stepsize, steps, random_start;        compute/evaluation/foolbox_pgd.py (foolbox's
                     eps_hi, search_steps (the batched binary search)       Linf/L2 PGD, per-sample epsilon)
    AdamPGD          PGD's options + adam_beta1, adam_beta2, adam_epsilon    the same for Adam-PGD
    JSMA             theta, gamma, steps, targets, pool, direction           compute/evaluation/sparse_attacks.jsma
    SparseFool       lambda_, steps, df_steps, candidates                    compute/evaluation/sparse_attacks.sparsefool

A family's class variables say how compute/evaluation/attacks.py runs it: `kind` ("min": minimization, one run
per setting; "eps": fixed epsilon, each sample's minimal epsilon by a batched binary search),
`stochastic` (random start: repeats give different adversarials) and `run_options` (options the
runner uses itself, never passed to the attack object: eps_hi and search_steps; init and init_steps).

Specs. `ATTACKS` maps each attack name ("pgd-linf", "fmn-l0", ...) to an `AttackSpec`: its norm,
family, the class it runs, its own defaults (e.g. PGD-L2's eps_hi 6.0), its default grid, and the
norms besides its own in which the smallest adversarial over runs is kept on its own (`select`).

Parsing. A stored AttackConfig row names an attack and a grid (JSON: option -> list of values, or a
list of settings); `parse_grid(attack, grid)` (and `AttackSpec.options(setting)` for one setting) is
the one parser from that JSON to typed options. It refuses an unknown attack, an unknown option, a
value of the wrong type (an int option takes an int; a float option an int or a float, stored as
float; a bool option a bool; None only where the option is optional) and an `init` that is not a
foolbox attack other than FMN or Brendel-Bethge, with an AttackConfigError (a
ValueError) that names the attack, the option and what is allowed. The JSON format of the stored
rows is unchanged, so configs of existing databases parse as they are.
"""
from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence, Union

SEARCH_STEPS = 10                 # default binary-search steps of the fixed-epsilon attacks


class AttackConfigError(ValueError):
    """An attack configuration names an unknown attack or option, or a value of the wrong type."""


# ------------------------------------------------------------------ option families


@dataclass(frozen=True, kw_only=True)
class AttackOptions:
    """Base of the option families (see the module docstring); every family has `steps`."""
    kind: ClassVar[str] = "min"
    stochastic: ClassVar[bool] = False
    run_options: ClassVar[tuple[str, ...]] = ()

    def as_dict(self) -> dict:
        """Every option, by name (what a run records as its params)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def attack_kwargs(self) -> dict:
        """The options the attack object's constructor takes (run_options left out)."""
        return {k: v for k, v in self.as_dict().items() if k not in self.run_options}


@dataclass(frozen=True, kw_only=True)
class DDN(AttackOptions):
    """Decoupled direction and norm (Rony et al. 2019), L2."""
    init_epsilon: float = 1.0
    steps: int = 100
    gamma: float = 0.05


@dataclass(frozen=True, kw_only=True)
class FMN(AttackOptions):
    """Fast minimum-norm (Pintor et al. 2021); `init`: the attack whose re-checked adversarials start
    it (None: the image; samples whose start fails run from the image), run for `init_steps`."""
    run_options: ClassVar[tuple[str, ...]] = ("init", "init_steps")
    requires_start: ClassVar[bool] = False
    steps: int = 100
    max_stepsize: float = 1.0
    gamma: float = 0.05
    binary_search_steps: int = 10
    init: Optional[str] = None
    init_steps: int = 100


@dataclass(frozen=True, kw_only=True)
class CarliniWagner(AttackOptions):
    """Carlini and Wagner (2017), L2."""
    binary_search_steps: int = 5
    steps: int = 200
    stepsize: float = 1e-2
    confidence: float = 0.0
    initial_const: float = 1e-2
    abort_early: bool = True


@dataclass(frozen=True, kw_only=True)
class BrendelBethge(AttackOptions):
    """Brendel et al. (2019), gradient-based boundary attack; starts from the re-checked adversarials
    of `init` (None: DDN) run for `init_steps`; samples whose start fails are failures."""
    run_options: ClassVar[tuple[str, ...]] = ("init", "init_steps")
    requires_start: ClassVar[bool] = True
    steps: int = 1000
    lr: float = 1e-3
    lr_decay: float = 0.5
    lr_num_decay: int = 20
    momentum: float = 0.8
    overshoot: float = 1.1
    binary_search_steps: int = 10
    init: Optional[str] = "ddn-l2"
    init_steps: int = 100


@dataclass(frozen=True, kw_only=True)
class PGD(AttackOptions):
    """Projected gradient descent at a fixed epsilon; each sample's minimal epsilon by a bisection on
    [0, eps_hi] with `search_steps` steps. abs_stepsize (None: rel_stepsize x epsilon) is foolbox's
    absolute step, the paper's PGD grid."""
    kind: ClassVar[str] = "eps"
    stochastic: ClassVar[bool] = True
    run_options: ClassVar[tuple[str, ...]] = ("eps_hi", "search_steps")
    rel_stepsize: float = 0.01 / 0.3
    abs_stepsize: Optional[float] = None
    steps: int = 40
    random_start: bool = True
    eps_hi: float = 0.3
    search_steps: int = SEARCH_STEPS


@dataclass(frozen=True, kw_only=True)
class AdamPGD(PGD):
    """PGD with Adam steps (foolbox 3.3.4)."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8


@dataclass(frozen=True, kw_only=True)
class JSMA(AttackOptions):
    """Untargeted JSMA (compute/evaluation/sparse_attacks.jsma), L0; early-stopping per sample.
    direction: 'both' (features move up or down), or the paper's one-sided 'increase' (theta = +1)
    and 'decrease' (theta = -1)."""
    theta: float = 1.0
    gamma: float = 0.1
    steps: int = 100
    targets: int = 1
    pool: int = 64
    direction: str = "both"


@dataclass(frozen=True, kw_only=True)
class SparseFool(AttackOptions):
    """SparseFool (compute/evaluation/sparse_attacks.sparsefool), L1; early-stopping per sample."""
    lambda_: float = 3.0
    steps: int = 20
    df_steps: int = 50
    candidates: int = 10


SPARSE_FAMILIES = (JSMA, SparseFool)        # run by compute/evaluation/sparse_attacks.py, not foolbox
STARTED_FAMILIES = (FMN, BrendelBethge)     # may start from another attack's adversarials


def _check_value(attack: str, option: str, hint: Any, value: Any) -> Any:
    """`value` checked against the option's type (see the module docstring); a float for a float option."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) is Union and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
    elif base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    allowed = base.__name__ + (" or None" if optional else "")
    raise AttackConfigError(f"attack {attack!r}: option {option!r} must be {allowed}, got {value!r}")


# ------------------------------------------------------------------ specs


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the registry (see the module docstring)."""
    name: str
    norm: str
    family: type                      # an AttackOptions subclass
    foolbox_class: str                # the foolbox 3.3.4 class it runs ("" for compute/evaluation/sparse_attacks.py)
    defaults: dict                    # this attack's own defaults over the family's
    grid: dict                        # default hyperparameter grid: option -> list of values
    # norms besides `norm` in which the smallest adversarial over runs is kept on its own (an L0/L1
    # attack: the fewest changed pixels and the smallest L1 may come from different runs)
    select: tuple = ()

    @property
    def kind(self) -> str:
        return self.family.kind

    @property
    def stochastic(self) -> bool:
        return self.family.stochastic

    def options(self, setting: Optional[dict] = None) -> AttackOptions:
        """The typed options of one setting (option -> value), completed by this attack's defaults;
        AttackConfigError for an unknown option or a value of the wrong type."""
        if isinstance(setting, self.family):
            return setting
        setting = dict(setting or {})
        hints = typing.get_type_hints(self.family)
        known = [f.name for f in dataclasses.fields(self.family)]
        unknown = sorted(set(setting) - set(known))
        if unknown:
            raise AttackConfigError(f"attack {self.name!r}: unknown options {unknown}; known: {sorted(known)}")
        values = {k: _check_value(self.name, k, hints[k], v) for k, v in {**self.defaults, **setting}.items()}
        options = self.family(**values)
        if isinstance(options, STARTED_FAMILIES) and options.init is not None:
            start = ATTACKS.get(options.init)
            if start is None or issubclass(start.family, STARTED_FAMILIES + SPARSE_FAMILIES):
                allowed = sorted(n for n, s in ATTACKS.items() if not issubclass(s.family, STARTED_FAMILIES + SPARSE_FAMILIES))
                raise AttackConfigError(f"attack {self.name!r}: init must be one of {allowed}, got {options.init!r}")
        return options

    def params(self, setting: Optional[dict] = None) -> dict:
        """The options of one setting as a dict (every option, defaults completed); AttackConfigError
        as `options`."""
        return self.options(setting).as_dict()

    def build(self, setting: Union[None, dict, AttackOptions] = None):
        """The attack object for one setting: a foolbox attack (PGD: compute/evaluation/foolbox_pgd.py's
        per-sample-epsilon subclass) or a `SparseAttack`; run options are not passed to it."""
        options = self.options(setting)
        kwargs = options.attack_kwargs()
        if isinstance(options, SPARSE_FAMILIES):
            return SparseAttack(options)
        if isinstance(options, PGD):
            from .foolbox_pgd import per_sample_class
            return per_sample_class(self.foolbox_class)(**kwargs)
        from foolbox import attacks as fa
        return getattr(fa, self.foolbox_class)(**kwargs)


class SparseAttack:
    """An attack of compute/evaluation/sparse_attacks.py with its options: run(net, x, y) -> (adv, success, iterations)."""

    def __init__(self, options: AttackOptions):
        self.options = options

    def run(self, net, x, y):
        from . import sparse_attacks
        fn = sparse_attacks.jsma if isinstance(self.options, JSMA) else sparse_attacks.sparsefool
        return fn(net, x, y, **self.options.attack_kwargs())


def _registry() -> dict[str, AttackSpec]:
    specs: dict[str, AttackSpec] = {}

    def add(name, norm, family, foolbox_class, grid, defaults=None, select=()):
        specs[name] = AttackSpec(name, norm, family, foolbox_class, dict(defaults or {}), grid, tuple(select))

    for norm, cls in (("l0", "L0BrendelBethgeAttack"), ("l1", "L1BrendelBethgeAttack"),
                      ("l2", "L2BrendelBethgeAttack"), ("linf", "LinfinityBrendelBethgeAttack")):
        add(f"bb-{norm}", norm, BrendelBethge, cls, {"lr": [1e-3, 1e-2]})
    add("cw-l2", "l2", CarliniWagner, "L2CarliniWagnerAttack", {"stepsize": [1e-2, 5e-2], "initial_const": [1e-2, 1.0]})
    add("ddn-l2", "l2", DDN, "DDNAttack", {"init_epsilon": [1.0, 0.1], "gamma": [0.05, 0.02]})
    for norm, cls in (("l0", "L0FMNAttack"), ("l1", "L1FMNAttack"), ("l2", "L2FMNAttack"), ("linf", "LInfFMNAttack")):
        add(f"fmn-{norm}", norm, FMN, cls, {"max_stepsize": [1.0, 0.1], "gamma": [0.05, 0.2]})
    l2_pgd = {"rel_stepsize": 0.025, "steps": 50, "eps_hi": 6.0}
    add("pgd-linf", "linf", PGD, "LinfProjectedGradientDescentAttack", {"rel_stepsize": [0.01 / 0.3, 0.1]})
    add("pgd-l2", "l2", PGD, "L2ProjectedGradientDescentAttack", {"rel_stepsize": [0.025, 0.1]}, l2_pgd)
    add("adampgd-linf", "linf", AdamPGD, "LinfAdamProjectedGradientDescentAttack", {"rel_stepsize": [0.01 / 0.3, 0.1]})
    add("adampgd-l2", "l2", AdamPGD, "L2AdamProjectedGradientDescentAttack", {"rel_stepsize": [0.025, 0.1]}, l2_pgd)
    # written after their papers (compute/evaluation/sparse_attacks.py): deterministic, early-stopping
    add("jsma-l0", "l0", JSMA, "", {"theta": [1.0, 0.3]}, select=("l1",))
    add("sparsefool-l1", "l1", SparseFool, "", {"lambda_": [1.0, 3.0]}, select=("l0",))
    return specs


ATTACKS: dict[str, AttackSpec] = _registry()


def attack_spec(name: str) -> AttackSpec:
    """ATTACKS[name]; AttackConfigError naming the known attacks."""
    if name not in ATTACKS:
        raise AttackConfigError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    return ATTACKS[name]


def expand_grid(grid: Union[None, dict, Sequence[dict]]) -> list[dict]:
    """A grid as a list of settings: a dict of lists gives the cartesian product (a scalar value
    counts as a one-element list); a list of dicts is taken as is; None or {} gives [{}]."""
    if grid is None:
        return [{}]
    if isinstance(grid, dict):
        keys = sorted(grid)
        values = [v if isinstance(v, (list, tuple)) else [v] for v in (grid[k] for k in keys)]
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)] or [{}]
    out = [dict(g) for g in grid]
    return out or [{}]


def parse_grid(attack: str, grid: Union[None, dict, Sequence[dict]] = None) -> tuple[AttackSpec, list[AttackOptions]]:
    """The one parser of a stored attack config: (its spec, the typed options of every setting of
    `grid`; None: the attack's default grid). AttackConfigError for an unknown attack or option or a
    value of the wrong type."""
    spec = attack_spec(attack)
    return spec, [spec.options(s) for s in expand_grid(grid if grid is not None else spec.grid)]


__all__ = ["ATTACKS", "AdamPGD", "AttackConfigError", "AttackOptions", "AttackSpec", "BrendelBethge",
           "CarliniWagner", "DDN", "FMN", "JSMA", "PGD", "SEARCH_STEPS", "SparseAttack", "SparseFool",
           "attack_spec", "expand_grid", "parse_grid"]
