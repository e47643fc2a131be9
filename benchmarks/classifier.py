"""Step time of the regularized classifier training against the unregularized step, for the demo and
the paper recipes (compute/classifier/train.CONFIGS).

Per recipe: its ResNet18 width, a classification batch of 64 grayscale 32x32 images, SGD; the
regularized step adds a stimulus batch of 36x64 images through the same network (BatchNorm by the
stimulus batch's own statistics, running statistics untouched: the recipes' stimulus_bn 'batch'),
Eq. 9 centred by the running feature mean (updated after the step) and Eq. 8 over all pairs at the
recipe's layers: compute/classifier/train.train_step, the code that trains.

Variants, timed interleaved in one loop (all recipes and variants take turns, so a change of the
machine's load hits them alike; median over --steps steps after --warmup):
  none          classification only (the reference of the recipe's ratios)
  ours-B        stimulus batch of B images, all B(B-1)/2 pairs in the loss (demo recipe: B = 12,
                paper recipe: B = 64; --extra adds other B, by default 8 for the demo, 12 for the paper)
  paper-style   (paper recipe) the paper's implementation: 64 stimulus images fed as 32 disjoint pairs
Also the one-off exact feature mean before the first step (train_classifier.stimulus_feature_mean,
a no-grad pass over the training stimuli), as seconds per 1000 stimuli.
Prints the step time, the ratio to the recipe's 'none', the pairs per step, and the load average
(other processes share this machine: compare the ratios, not the seconds). On a GPU the network
runs channels_last with bf16 autocast and the clock is read after torch.cuda.synchronize.

    python benchmarks/classifier.py [--device cuda] [--steps 6] [--recipes demo paper] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from neuralreg_schema.compute.classifier import network as clf_network, recipes as clf_recipes, similarity_loss, train as tc   # first: OMP_WAIT_POLICY before torch
from neuralreg_schema.compute.common.runtime import autocast, prepare_input

import numpy as np
import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--recipes", nargs="+", default=["demo", "paper"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: robust on a shared machine)")
    p.add_argument("--extra", type=int, nargs="*", default=None,
                   help="other stimulus batches to time with every recipe (default: demo 8, paper 12)")
    a = p.parse_args(argv)
    dev = tc.resolve_device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    n_stim, n_train = 512, 1024
    rng = np.random.default_rng(0)
    m = np.clip(rng.normal(0, 0.3, (n_stim, n_stim)), -0.99, 0.99)
    data = tc.StepData(
        train_x=torch.rand(n_train, 1, 32, 32, device=dev), train_y=torch.randint(0, 10, (n_train,), device=dev),
        stim_x=torch.rand(n_stim, 1, 36, 64, device=dev),
        stim_target=torch.as_tensor((m + m.T) / 2, dtype=torch.float32, device=dev))
    loads = [os.getloadavg()[0]]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    variants = {}          # name -> dict(recipe, cfg, stim, net, lw, opt, mean)
    init_times = {}
    for recipe in a.recipes:
        cfg = clf_recipes.check_config({**clf_recipes.default_config(recipe), "augment": False})
        extra = a.extra if a.extra is not None else {"demo": [8], "paper": [12]}.get(recipe, [])
        sizes = [0] + sorted(set([cfg["stim_batch"], *extra]))
        for b in sizes + (["paper"] if recipe == "paper" else []):
            net = clf_network.ClassifierNet(cfg["arch"], 10, cfg["width"]).to(dev)
            if dev.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
            lw = similarity_loss.LayerWeights(cfg["layers"]).to(dev) if b else None
            mean = None
            if b:
                mean = similarity_loss.RunningFeatureMean(cfg["layers"], cfg["center_momentum"])
                step_cfg = {**cfg, "stim_batch": 64 if b == "paper" else b}
                sync()
                t0 = time.perf_counter()
                mean.reset(tc.stimulus_feature_mean(net, data.stim_x, cfg["layers"], step_cfg))
                sync()
                init_times.setdefault(recipe, (time.perf_counter() - t0) * 1000 / n_stim)
            name = f"{recipe}:none" if not b else f"{recipe}:paper-style" if b == "paper" else f"{recipe}:ours-{b}"
            variants[name] = dict(recipe=recipe, cfg=cfg, stim=b, net=net, lw=lw,
                                  opt=tc.make_optimizer(net, lw, cfg), mean=mean)
    paper_mask = torch.zeros(64, 64, dtype=torch.bool, device=dev)
    paper_mask[torch.arange(0, 64, 2), torch.arange(1, 64, 2)] = True      # 32 disjoint pairs

    def paper_step(v, idx, sidx):
        """The paper's pathway: 64 stimulus images, 32 pairs (i, i+1) in the loss."""
        net, lw, opt, cfg, mean = v["net"], v["lw"], v["opt"], v["cfg"], v["mean"]
        with autocast(dev):
            logits, _ = net(prepare_input(data.train_x[idx], dev))
        task = torch.nn.functional.cross_entropy(logits.float(), data.train_y[idx])
        with tc.stimulus_mode(net, cfg), autocast(dev):
            _, feats = net(prepare_input(data.stim_x[sidx], dev), cfg["layers"])
        feats = {k: f.float() for k, f in feats.items()}
        sim = similarity_loss.similarity_loss(feats, data.stim_target[sidx][:, sidx], lw.gamma(), center=mean.center(),
                                              pair_mask=paper_mask)
        loss = task + cfg["alpha"] * sim
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mean.update(feats)

    times = {name: [] for name in variants}
    gen = torch.Generator().manual_seed(0)
    for it in range(a.warmup + a.steps):
        for name, v in variants.items():
            idx = torch.randperm(n_train, generator=gen)[:v["cfg"]["batch_size"]].to(dev)
            sync()
            t0 = time.perf_counter()
            if v["stim"] == "paper":
                paper_step(v, idx, torch.randperm(n_stim, generator=gen)[:64].to(dev))
            else:
                sidx = torch.randperm(n_stim, generator=gen)[:v["stim"]].to(dev) if v["stim"] else None
                tc.train_step(v["net"], v["lw"], v["opt"], data, idx, sidx, {**v["cfg"], "stim_batch": v["stim"] or 2},
                              None, v["mean"])
            sync()
            if it >= a.warmup:
                times[name].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    print(f"device {tc.describe_device(dev)}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"classification batch 64 x 32x32, stimuli 36x64, median of {a.steps} steps; "
          f"load average (1 min) {min(loads):.2f}-{max(loads):.2f} during the run")
    print(f"{'recipe':<7} {'variant':<12} {'width':>5} {'stimuli':>7} {'pairs':>6} {'step s':>8} {'ratio':>6}")
    for name, v in variants.items():
        recipe, variant = name.split(":")
        med = statistics.median(times[name])
        base = statistics.median(times[f"{recipe}:none"])
        n_img = 64 if v["stim"] == "paper" else v["stim"]
        pairs = 32 if v["stim"] == "paper" else v["stim"] * (v["stim"] - 1) // 2
        print(f"{recipe:<7} {variant:<12} {v['cfg']['width']:>5} {n_img:>7} {pairs:>6} {med:>8.3f} {med / base:>6.2f}")
    for recipe, per_1000 in init_times.items():
        base = statistics.median(times[f"{recipe}:none"])
        print(f"{recipe}: exact feature mean before the first step: {per_1000:.2f} s per 1000 stimuli "
              f"(= {per_1000 / base:.1f} plain steps)")


if __name__ == "__main__":
    main()
