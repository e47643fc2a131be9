"""Check the convolution kernels torch runs for our networks against a slow reference path.

Libraries have bugs too: oneDNN's channels-last 1x1 stride-2 backward-weights kernel with < 8 input
channels hangs or returns wrong gradients (compute/common/runtime.py). This module finds every
convolution our networks actually run, in the memory format the training code actually feeds it,
and compares the fast path (float32, oneDNN enabled, as in training) with a reference (float64,
oneDNN disabled: torch's own slow convolution) on the same inputs and weights.

1. `record_conv_inputs(network, recipe)` runs one real training step of the named network and
   recipe (the classifier's `train_step` with crop/flip augmentation and the stimulus pass; the
   predictive model's `train_step`), with forward pre-hooks on every nn.Conv2d that record the
   input's shape and strides, and whether it is standard NCHW (`runtime.is_standard_nchw`).
2. `check_conv(spec)` rebuilds that convolution (same channels, kernel, stride, padding, input
   size and memory format; batch capped) and compares output and weight gradient, `repeats` times
   with fresh data, so a nondeterministic failure is caught. Float32 oneDNN results match a
   float64 computation to ~1e-5 relative; the tolerance is 1e-3 of the reference's scale.

On a GPU (`device='cuda'`) the step runs there as the trainers run it (network and data on the
device, channels-last, bf16 autocast where the trainer uses it), and each convolution is compared on
the device in float32 with TF32 off (tolerance 1e-3, as on the CPU) and, when the training step ran
it under autocast, in bf16 autocast (tolerance `BF16_RTOL`: bf16 keeps 8 significant bits, a
rounding error of 2^-9 = 2e-3 per operand), both against the same float64 CPU reference.

Run as `python -m neuralreg_schema.compute.kernelcheck [network:recipe ...] [--device cuda]
[--repeats N] [--json FILE]` (e.g. on a new machine or torch version); the unit test and
`neuralreg selftest` run it in a subprocess with a timeout, so a hang fails them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .common.runtime import is_standard_nchw, resolve_device

FP32_RTOL = 1e-3            # float32 against float64, relative to the reference's largest value
BF16_RTOL = 2e-2            # bf16 autocast against float64 (inputs and outputs rounded to 8 bits)

NETWORKS = {
    "classifier": ("tiny", "demo", "paper", "paper-resnet34"),
    "predictive": ("tiny", "demo", "paper"),
}


@dataclass(frozen=True)
class ConvSpec:
    """One convolution as the network runs it."""
    name: str                       # module path, e.g. 'resnet.layer2.0.shortcut.0'
    in_channels: int
    out_channels: int
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    bias: bool
    input_shape: tuple              # (B, C, H, W) as recorded
    input_stride: tuple
    standard_nchw: bool             # the input had standard strides (the CPU path's chosen format)
    channels_last: bool             # the input counts as channels-last contiguous
    autocast: bool = False          # the training step ran it under bf16 autocast (GPU only)

    def key(self) -> tuple:
        """What determines the kernel: everything but the name and the batch size."""
        d = asdict(self)
        d.pop("name")
        d["input_shape"] = tuple(self.input_shape[1:])
        d.pop("input_stride")
        return tuple(sorted(d.items()))


def _hooks(model: nn.Module, found: list) -> list:
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(module, inputs, name=name):
                x = inputs[0]
                found.append(ConvSpec(
                    name, module.in_channels, module.out_channels, tuple(module.kernel_size),
                    tuple(module.stride), tuple(module.padding), tuple(module.dilation), module.groups,
                    module.bias is not None, tuple(x.shape), tuple(x.stride()), is_standard_nchw(x),
                    x.is_contiguous(memory_format=torch.channels_last),
                    x.is_cuda and torch.is_autocast_enabled("cuda")))
            handles.append(m.register_forward_pre_hook(hook))
    return handles


def _classifier_step(recipe: str, found: list, batch: int, dev: torch.device) -> None:
    from .classifier import network as clf_network, recipes, similarity_loss, train as tc
    arch = "resnet34" if recipe.endswith("resnet34") else None
    cfg = recipes.check_config({**recipes.default_config(recipe.split("-")[0]), **({"arch": arch} if arch else {}),
                           "batch_size": batch, "stim_batch": min(8, recipes.default_config(recipe.split("-")[0])["stim_batch"])})
    g = torch.Generator().manual_seed(0)
    net = clf_network.ClassifierNet(cfg["arch"], 10, cfg["width"]).to(dev)
    if dev.type == "cuda":                               # as train_classifier runs it
        net = net.to(memory_format=torch.channels_last)
    lw = similarity_loss.LayerWeights(cfg["layers"]).to(dev)
    opt = tc.make_optimizer(net, lw, cfg)
    n_stim = cfg["stim_batch"]
    m = torch.rand(n_stim, n_stim, generator=g) * 0.5
    data = tc.StepData(train_x=torch.rand(batch, 1, 32, 32, generator=g), train_y=torch.randint(0, 10, (batch,), generator=g),
                       stim_x=torch.rand(n_stim, 36, 64, generator=g)[:, None],
                       stim_target=(m + m.T).fill_diagonal_(1.0))
    data = tc.StepData(*(t.to(dev) for t in (data.train_x, data.train_y, data.stim_x, data.stim_target)))
    span = 2 * cfg["crop_padding"] + 1
    crops = (torch.randint(0, span, (batch,), generator=g), torch.randint(0, span, (batch,), generator=g),
             torch.rand(batch, generator=g) < 0.5)
    mean = similarity_loss.RunningFeatureMean(cfg["layers"], cfg["center_momentum"])
    mean.reset(tc.stimulus_feature_mean(net, data.stim_x, cfg["layers"], cfg))
    handles = _hooks(net, found)
    try:
        net.train()
        tc.train_step(net, lw, opt, data, torch.arange(batch, device=dev), torch.arange(n_stim, device=dev), cfg,
                      crops, mean)
        clf_network.accuracy(net, data.train_x, data.train_y, batch)
    finally:
        for h in handles:
            h.remove()


def _predictive_step(recipe: str, found: list, batch: int, dev: torch.device) -> None:
    from .predictive.network import PredictiveNetwork
    from .predictive.train import default_config, train_step
    cfg = default_config(recipe)
    g = torch.Generator().manual_seed(0)
    n_neurons = 16
    net = PredictiveNetwork(cfg, n_neurons)
    net.set_statistics(127.5, 70.0, np.zeros(3), np.ones(3), np.zeros(2), np.ones(2), np.ones(n_neurons))
    net.to(dev)
    if dev.type == "cuda":                               # as train_predictive runs it
        net.core.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    handles = _hooks(net, found)
    try:
        net.train()
        inputs = (torch.rand(batch, 36, 64, generator=g) * 255, torch.randn(batch, 3, generator=g),
                  torch.randn(batch, 2, generator=g), torch.poisson(torch.ones(batch, n_neurons), generator=g))
        train_step(net, opt, *(t.to(dev) for t in inputs))
    finally:
        for h in handles:
            h.remove()


def record_conv_inputs(network: str, recipe: str, batch: int = 4, device="cpu") -> list[ConvSpec]:
    """Every convolution call of one real training step of `network` ('classifier' or 'predictive')
    with `recipe`, on `device` (as the trainers run there), in call order."""
    if network not in NETWORKS or recipe not in NETWORKS[network]:
        raise ValueError(f"unknown network {network}:{recipe}; known: "
                         + ", ".join(f"{n}:{r}" for n, rs in NETWORKS.items() for r in rs))
    found: list[ConvSpec] = []
    (_classifier_step if network == "classifier" else _predictive_step)(recipe, found, batch, resolve_device(device))
    return found


def _conv_pass(spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor, bias, grad_out: torch.Tensor,
               bf16: bool = False):
    x = x.detach().requires_grad_(False)
    w = weight.detach().clone().requires_grad_(True)
    b = bias.detach().clone().requires_grad_(True) if bias is not None else None
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = torch.nn.functional.conv2d(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups)
    out.backward(grad_out.to(out.dtype))
    return out.detach().cpu(), w.grad.detach().cpu()


def _fast_pass(spec, x, weight, bias, grad_out, dev: torch.device, mode: str):
    """The path under test on `dev`: 'float32' (TF32 off on a GPU) or 'bf16' (autocast)."""
    x = x.to(dev)
    if spec.channels_last and not spec.standard_nchw:
        x = x.contiguous(memory_format=torch.channels_last)
    args = (x, weight.to(dev), bias.to(dev) if bias is not None else None, grad_out.to(dev))
    if dev.type == "cuda":
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return _conv_pass(spec, *args, bf16=mode == "bf16")
    return _conv_pass(spec, *args, bf16=mode == "bf16")


def check_conv(spec: ConvSpec, repeats: int = 3, batch: int = 8, seed: int = 0, rtol: float = FP32_RTOL,
               device="cpu", bf16_rtol: float = BF16_RTOL) -> dict:
    """Compare forward output and weight gradient of `spec` on the fast path (on the CPU: float32,
    oneDNN on; on a GPU: float32 with TF32 off, and bf16 autocast when the training step used it; the
    recorded memory format) with float64 on the CPU and oneDNN off, `repeats` times with fresh data.
    Returns the worst relative errors ('output', 'weight_grad', and with bf16 'bf16_output',
    'bf16_weight_grad'); raises AssertionError naming the convolution on a mismatch."""
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(seed)
    b = min(batch, spec.input_shape[0]) if spec.input_shape[0] else batch
    _, c, h, w = spec.input_shape
    # bf16 where the training step ran the convolution under autocast (on a GPU; a spec marked so by hand
    # runs it under the CPU's autocast)
    modes = [("float32", "", rtol)] + ([("bf16", "bf16_", bf16_rtol)] if spec.autocast else [])
    worst = {f"{prefix}{what}": 0.0 for _, prefix, _ in modes for what in ("output", "weight_grad")}
    for r in range(repeats):
        x = torch.randn(b, c, h, w, generator=g)
        if spec.channels_last and not spec.standard_nchw:
            x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(spec.out_channels, spec.in_channels // spec.groups, *spec.kernel, generator=g) * 0.1
        bias = torch.randn(spec.out_channels, generator=g) if spec.bias else None
        with torch.no_grad():
            ref_shape = torch.nn.functional.conv2d(x[:1], weight, bias, spec.stride, spec.padding, spec.dilation,
                                                   spec.groups).shape
        grad_out = torch.randn(b, *ref_shape[1:], generator=g)
        with torch.backends.mkldnn.flags(enabled=False):
            ref_out, ref_gw = _conv_pass(spec, x.double(), weight.double(), bias.double() if bias is not None else None,
                                         grad_out.double())
        for mode, prefix, tol in modes:
            fast_out, fast_gw = _fast_pass(spec, x, weight, bias, grad_out, dev, mode)
            for what, fast, ref in (("output", fast_out, ref_out), ("weight_grad", fast_gw, ref_gw)):
                err = float((fast.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
                worst[prefix + what] = max(worst[prefix + what], err)
                if not err <= tol:
                    layout = ("channels-last" if x.is_contiguous(memory_format=torch.channels_last)
                              and not is_standard_nchw(x) else "NCHW")
                    raise AssertionError(f"{spec.name} ({spec.in_channels}->{spec.out_channels}, kernel {spec.kernel}, "
                                         f"stride {spec.stride}, input {tuple(x.shape)}, {layout}, {dev.type} {mode}): "
                                         f"{what} differs from the reference by {err:.3g} (relative, tolerance "
                                         f"{tol:g}), repeat {r + 1}")
    return worst


def check_network(network: str, recipe: str, repeats: int = 3, say=print, device="cpu") -> list[dict]:
    """Record the convolutions of one training step on `device`, require NCHW inputs on the CPU, and
    check every distinct convolution there. Returns one row per distinct convolution."""
    dev = resolve_device(device)
    specs = record_conv_inputs(network, recipe, device=dev)
    if not specs:
        raise AssertionError(f"{network}:{recipe}: no convolution was recorded")
    bad = [s for s in specs if not s.standard_nchw]
    if bad and dev.type == "cpu":
        raise AssertionError(f"{network}:{recipe}: {len(bad)} convolution input(s) on the CPU are not standard NCHW, "
                             f"e.g. {bad[0].name} with strides {bad[0].input_stride} for shape {bad[0].input_shape}")
    rows, seen = [], set()
    for spec in specs:
        if spec.key() in seen:
            continue
        seen.add(spec.key())
        t0 = time.perf_counter()
        worst = check_conv(spec, repeats=repeats, device=dev)
        rows.append({"network": f"{network}:{recipe}", "conv": spec.name, "device": dev.type,
                     "layout": "NCHW" if spec.standard_nchw else "channels-last", "autocast": spec.autocast,
                     **worst, "seconds": time.perf_counter() - t0})
    layout = "all NCHW" if not bad else f"{len(specs) - len(bad)} NCHW, {len(bad)} channels-last"
    bf16 = [r for r in rows if "bf16_output" in r]
    say(f"{network}:{recipe}: {len(specs)} convolution calls, {len(rows)} distinct, {layout}; worst relative error "
        f"output {max(r['output'] for r in rows):.2g}, weight gradient {max(r['weight_grad'] for r in rows):.2g}"
        + (f"; bf16 autocast ({len(bf16)}) output {max(r['bf16_output'] for r in bf16):.2g}, weight gradient "
           f"{max(r['bf16_weight_grad'] for r in bf16):.2g}" if bf16 else "") + f" ({dev.type})")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("networks", nargs="*", help="network:recipe (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the fast path runs")
    parser.add_argument("--json", help="also write one row per distinct convolution to this JSON file")
    args = parser.parse_args(argv)
    todo = args.networks or [f"{n}:{r}" for n, rs in NETWORKS.items() for r in rs]
    dev = resolve_device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN "
          f"{'available' if torch.backends.mkldnn.is_available() else 'absent'}, device {dev}", flush=True)
    rows: list[dict] = []
    errors: list[str] = []

    def save():                         # after every network: a run cut short leaves what it checked
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"passed": not errors, "errors": errors, "rows": rows}, f, indent=1)

    for item in todo:
        network, _, recipe = item.partition(":")
        try:
            rows += check_network(network, recipe, repeats=args.repeats, say=lambda m: print(m, flush=True),
                                  device=dev)
        except AssertionError as exc:   # a wrong kernel: named, and the other networks are still checked
            errors.append(str(exc))
            print(f"{item}: FAILED: {exc}", flush=True)
        save()
    save()
    if errors:
        print(f"kernel check FAILED: {len(errors)} network(s)")
        return 1
    print("kernel check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
