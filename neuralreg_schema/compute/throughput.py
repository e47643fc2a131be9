"""How fast this machine trains and attacks, measured the way the trainers and attacks run: the
figures `neuralreg selftest` prints (benchmarks/classifier.py, predictive.py and attacks.py are the
longer versions of the same measurements).

* `classifier_step_ratio(recipe)`: the regularized training step (`classifier/train.train_step` with
  the recipe's stimulus batch, all pairs, running feature mean) against the plain step, timed
  interleaved (the machine's load hits both alike), median over the steps: the ratio, and each step's
  seconds. The GPU-hours of `plan paper` scale with it.
* `predictive_throughput(recipe)`: training trials/s of the predictive model (`predictive/train.train_step`
  on synthetic data of the paper's shape), as `train_predictive` runs it on the device.
* `attack_throughput(name)`: minimal-perturbation samples/s of one attack setting (`evaluation/attacks.run_attack`,
  foolbox) on a random-init ResNet18 (throughput does not depend on training), and sample-gradients/s.

Each returns a dict with the sizes it used and the peak memory of the measurement (GPU:
torch.cuda.max_memory_allocated since the measurement started; CPU: the process's peak resident set
so far). The clock is read after torch.cuda.synchronize. `PROFILES` holds the sizes: 'gpu' (the
recipes' own sizes and enough steps), 'cpu' (the recipes' sizes, few steps), 'quick' (small networks
and batches: seconds on a CPU; its figures are not the recipes')."""
from __future__ import annotations

import resource
import statistics
import time

import numpy as np
import torch

from .classifier import network as clf_network, recipes as clf_recipes, similarity_loss, train as tc
from .common.runtime import describe_device, resolve_device
from .evaluation import attacks as A
from .predictive.network import PredictiveNetwork
from .predictive.train import default_config as predictive_config, train_step as predictive_step

# sizes per profile: classifier (steps, warmup, and overrides of the recipe), predictive (neurons,
# trials, steps, warmup, batch override), attacks (width, samples, and one setting per attack)
PROFILES = {
    "gpu": {"clf_steps": 20, "clf_warmup": 5, "clf_override": {},
            "pred_neurons": 8000, "pred_trials": 5000, "pred_steps": 50, "pred_warmup": 5, "pred_batch": None,
            "att_width": 64, "att_samples": 250,
            "att_settings": {"pgd-linf": {"steps": 50, "search_steps": 12, "abs_stepsize": 1e-2, "eps_hi": 0.3},
                             "ddn-l2": {"steps": 100}}},
    "cpu": {"clf_steps": 3, "clf_warmup": 1, "clf_override": {},
            "pred_neurons": 8000, "pred_trials": 512, "pred_steps": 3, "pred_warmup": 1, "pred_batch": None,
            "att_width": 64, "att_samples": 8,
            "att_settings": {"pgd-linf": {"steps": 10, "search_steps": 3, "abs_stepsize": 1e-2, "eps_hi": 0.3},
                             "ddn-l2": {"steps": 20}}},
    "quick": {"clf_steps": 2, "clf_warmup": 1, "clf_override": {"width": 4, "batch_size": 8, "stim_batch": 4},
              "pred_neurons": 200, "pred_trials": 64, "pred_steps": 2, "pred_warmup": 1, "pred_batch": 8,
              "att_width": 4, "att_samples": 8,
              "att_settings": {"pgd-linf": {"steps": 5, "search_steps": 2, "abs_stepsize": 1e-2, "eps_hi": 0.3},
                               "ddn-l2": {"steps": 10}}},
}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _start_memory(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_mib(dev: torch.device) -> float:
    """GPU: peak allocated since the last reset; CPU: the process's peak resident set (MiB)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10       # Linux: KiB


def classifier_step_ratio(recipe: str, device=None, profile: str = "gpu", seed: int = 0) -> dict:
    """Median seconds of the plain and the regularized training step of the classifier `recipe` and
    their ratio (module docstring)."""
    dev = resolve_device(device)
    p = PROFILES[profile]
    cfg = clf_recipes.check_config({**clf_recipes.default_config(recipe), "augment": False, **p["clf_override"]})
    torch.manual_seed(seed)
    n_stim, n_train, b = max(4 * cfg["stim_batch"], 32), max(4 * cfg["batch_size"], 64), cfg["stim_batch"]
    rng = np.random.default_rng(seed)
    m = np.clip(rng.normal(0, 0.3, (n_stim, n_stim)), -0.99, 0.99)
    data = tc.StepData(train_x=torch.rand(n_train, 1, 32, 32, device=dev),
                       train_y=torch.randint(0, 10, (n_train,), device=dev),
                       stim_x=torch.rand(n_stim, 1, 36, 64, device=dev),
                       stim_target=torch.as_tensor((m + m.T) / 2, dtype=torch.float32, device=dev))
    _start_memory(dev)
    runs = {}
    for kind in ("plain", "regularized"):
        net = clf_network.ClassifierNet(cfg["arch"], 10, cfg["width"]).to(dev)
        if dev.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        lw = similarity_loss.LayerWeights(cfg["layers"]).to(dev) if kind == "regularized" else None
        mean = None
        if lw is not None:
            mean = similarity_loss.RunningFeatureMean(cfg["layers"], cfg["center_momentum"])
            mean.reset(tc.stimulus_feature_mean(net, data.stim_x, cfg["layers"], cfg))
        runs[kind] = (net, lw, tc.make_optimizer(net, lw, cfg), mean)
    times = {kind: [] for kind in runs}
    gen = torch.Generator().manual_seed(seed)
    for it in range(p["clf_warmup"] + p["clf_steps"]):
        for kind, (net, lw, opt, mean) in runs.items():
            idx = torch.randperm(n_train, generator=gen)[:cfg["batch_size"]].to(dev)
            sidx = torch.randperm(n_stim, generator=gen)[:b].to(dev) if lw is not None else None
            _sync(dev)
            t0 = time.perf_counter()
            task, sim, _ = tc.train_step(net, lw, opt, data, idx, sidx, cfg, None, mean)
            _sync(dev)
            if it >= p["clf_warmup"]:
                times[kind].append(time.perf_counter() - t0)
            if not torch.isfinite(task):
                raise RuntimeError(f"classifier {recipe}: non-finite loss in the throughput run")
    plain, reg = statistics.median(times["plain"]), statistics.median(times["regularized"])
    return {"recipe": recipe, "device": describe_device(dev), "width": cfg["width"], "batch": cfg["batch_size"],
            "stim_batch": b, "steps": p["clf_steps"], "plain_s": plain, "regularized_s": reg, "ratio": reg / plain,
            "images_per_s": cfg["batch_size"] / plain, "peak_mib": peak_memory_mib(dev)}


def predictive_throughput(recipe: str = "paper", device=None, profile: str = "gpu", seed: int = 0) -> dict:
    """Training trials/s of the predictive model `recipe` on synthetic data (module docstring)."""
    dev = resolve_device(device)
    p = PROFILES[profile]
    cfg = predictive_config(recipe)
    bs = p["pred_batch"] or cfg["batch_size"]
    g = torch.Generator().manual_seed(seed)
    n, k = p["pred_trials"], p["pred_neurons"]
    images = (torch.rand(n, 36, 64, generator=g) * 255).to(dev)
    behavior, eye = torch.randn(n, 3, generator=g).to(dev), torch.randn(n, 2, generator=g).to(dev)
    responses = torch.poisson((torch.rand(k, generator=g) * 3 + 0.1).expand(n, -1).contiguous(), generator=g).to(dev)
    torch.manual_seed(seed)
    net = PredictiveNetwork(cfg, k)
    net.set_statistics(127.5, 70.0, np.zeros(3), np.ones(3), np.zeros(2), np.ones(2),
                       responses.std(dim=0).clamp_min(1e-3).cpu().numpy())
    net.init_bias(responses.mean(dim=0).cpu())
    net.to(dev).train()
    if dev.type == "cuda":                          # as train_predictive runs it
        net.core.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    _start_memory(dev)

    def run(steps: int) -> torch.Tensor:
        loss = torch.zeros((), device=dev)
        for _ in range(steps):
            idx = torch.randint(n, (bs,), generator=g).to(dev)
            loss = loss + predictive_step(net, opt, images[idx], behavior[idx], eye[idx], responses[idx])
        return loss

    run(p["pred_warmup"])
    _sync(dev)
    t0 = time.perf_counter()
    loss = run(p["pred_steps"])
    _sync(dev)
    seconds = time.perf_counter() - t0
    if not torch.isfinite(loss):
        raise RuntimeError(f"predictive {recipe}: non-finite loss in the throughput run")
    return {"recipe": recipe, "device": describe_device(dev), "neurons": k, "batch": bs, "steps": p["pred_steps"],
            "trials_per_s": p["pred_steps"] * bs / seconds, "ms_per_step": 1000 * seconds / p["pred_steps"],
            "peak_mib": peak_memory_mib(dev)}


class _Counting(torch.nn.Module):
    """Counts the samples of every gradient-enabled forward pass (one sample-gradient each)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.grad = net, 0

    def forward(self, x):
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad += len(x)
        return self.net(x)


def attack_throughput(name: str, device=None, profile: str = "gpu", seed: int = 0) -> dict:
    """Minimal-perturbation samples/s of attack `name` ('pgd-linf' or 'ddn-l2': PGD with its minimal
    epsilon search, DDN) at the profile's setting (module docstring)."""
    dev = resolve_device(device)
    p = PROFILES[profile]
    setting = p["att_settings"][name]
    torch.manual_seed(seed)
    net = clf_network.ClassifierNet("resnet18", 10, p["att_width"]).to(dev).eval()
    counted = _Counting(net)
    x = torch.rand(p["att_samples"], 1, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()
    y = A.predict(net, x)                           # the model's own labels: every sample is attacked
    _start_memory(dev)
    _sync(dev)
    t0 = time.perf_counter()
    out = A.run_attack(counted, x, y, name, grid=[setting], repeats=1, batch_size=p["att_samples"], device=dev,
                       seed=seed)
    _sync(dev)
    seconds = time.perf_counter() - t0
    return {"attack": name, "device": describe_device(dev), "width": p["att_width"], "samples": p["att_samples"],
            "setting": setting, "seconds": seconds, "samples_per_s": p["att_samples"] / seconds,
            "sample_grads_per_s": counted.grad / seconds, "fooled": int(out.success.sum()),
            "peak_mib": peak_memory_mib(dev)}
