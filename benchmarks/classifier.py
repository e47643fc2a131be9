"""Step time of the regularized classifier training against the unregularized step, at the paper's sizes.

ResNet18 (width 64), a classification batch of 64 grayscale 32x32 images, SGD; the regularized step
adds a stimulus batch of 36x64 images through the same network (BatchNorm in eval mode) and Eq. 8
over the pairs at layers 1/5/9/13/17 (compute/train_classifier.train_step, the code that trains).

Variants, timed interleaved in one run (median over --steps steps after --warmup):
  none          classification only
  ours-B        stimulus batch of B images, all B(B-1)/2 pairs enter the loss (the paper recipe: B = 12)
  paper-style   the paper's implementation: as many stimulus images as classification images (64),
                fed as 32 disjoint pairs (one pair per two images)
Prints the step time, the ratio to 'none' and the similarity pairs per step of each. On a GPU the
network runs channels_last with bf16 autocast and the clock is read after torch.cuda.synchronize.

    python benchmarks/classifier.py [--device cuda] [--steps 8] [--stim 8 12 16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from neuralreg_schema.compute import rsa_torch, train_classifier as tc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--stim", type=int, nargs="+", default=[8, 12, 16])
    a = p.parse_args(argv)
    dev = tc.resolve_device(a.device)
    torch.manual_seed(0)
    cfg = tc.check_config({**tc.default_config("paper"), "batch_size": a.batch, "width": a.width, "augment": False})
    n_stim = 512
    rng = np.random.default_rng(0)
    data = tc.StepData(
        train_x=torch.rand(1024, 1, 32, 32, device=dev), train_y=torch.randint(0, 10, (1024,), device=dev),
        stim_x=torch.rand(n_stim, 1, 36, 64, device=dev),
        stim_target=torch.as_tensor(np.clip(rng.normal(0, 0.3, (n_stim, n_stim)), -0.99, 0.99),
                                    dtype=torch.float32, device=dev))
    data.stim_target = (data.stim_target + data.stim_target.T) / 2

    def make(stim):
        net = tc.ClassifierNet("resnet18", 10, a.width).to(dev)
        if dev.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        lw = rsa_torch.LayerWeights(cfg["layers"]).to(dev) if stim else None
        return net, lw, tc.make_optimizer(net, lw, cfg)

    variants = {"none": (0, make(0))}
    for b in a.stim:
        variants[f"ours-{b}"] = (b, make(b))
    variants["paper-style"] = ("paper", make(1))
    paper_mask = torch.zeros(a.batch, a.batch, dtype=torch.bool, device=dev)
    paper_mask[torch.arange(0, a.batch, 2), torch.arange(1, a.batch, 2)] = True      # 32 disjoint pairs

    def paper_step(net, lw, opt, idx, sidx):
        """The paper's pathway: 64 stimulus images, 32 pairs (i, i+1) in the loss."""
        x = data.train_x[idx]
        with tc._autocast(dev):
            logits, _ = net(tc._prepare(x, dev))
        task = torch.nn.functional.cross_entropy(logits.float(), data.train_y[idx])
        with tc.stimulus_mode(net, cfg), tc._autocast(dev):
            _, feats = net(tc._prepare(data.stim_x[sidx], dev), cfg["layers"])
        feats = {k: v.float() for k, v in feats.items()}
        sim = rsa_torch.similarity_loss(feats, data.stim_target[sidx][:, sidx], lw.gamma(), pair_mask=paper_mask)
        loss = task + cfg["alpha"] * sim
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {name: [] for name in variants}
    gen = torch.Generator().manual_seed(0)
    for it in range(a.warmup + a.steps):
        for name, (stim, (net, lw, opt)) in variants.items():
            idx = torch.randperm(1024, generator=gen)[:a.batch].to(dev)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            if stim == "paper":
                paper_step(net, lw, opt, idx, torch.randperm(n_stim, generator=gen)[:a.batch].to(dev))
            else:
                sidx = torch.randperm(n_stim, generator=gen)[:stim].to(dev) if stim else None
                tc.train_step(net, lw, opt, data, idx, sidx, {**cfg, "stim_batch": stim or 2}, None)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if it >= a.warmup:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["none"])
    print(f"device {tc.describe_device(dev)}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"ResNet18 width {a.width}, classification batch {a.batch} x 32x32, stimuli 36x64, "
          f"median of {a.steps} steps")
    print(f"{'variant':<13} {'stimuli':>7} {'pairs':>6} {'step s':>8} {'ratio':>6}")
    for name, (stim, _) in variants.items():
        med = statistics.median(times[name])
        n_img = a.batch if stim == "paper" else stim
        pairs = a.batch // 2 if stim == "paper" else stim * (stim - 1) // 2
        print(f"{name:<13} {n_img:>7} {pairs:>6} {med:>8.3f} {med / base:>6.2f}")


if __name__ == "__main__":
    main()
