"""Benchmark: training throughput of the neural predictive model at paper size.

Builds synthetic data of the paper's size (default 8000 neurons, 5000 training trials of 36x64
images, Poisson responses, random behavior and eye positions; nothing is learned from it), then
for each config ("demo", then "paper", unless --configs says otherwise) times a fixed number of training
steps (`train_predictive.train_step`: forward, Poisson loss + regulariser, backward, Adam step)
after warm-up steps, synchronising the GPU before reading the clock. Prints per config: trials/s,
ms/step, the number of parameters and the peak memory (GPU: torch.cuda.max_memory_allocated;
CPU: the process's peak resident set so far, data included - cumulative, hence the smaller
config runs first).

    python benchmarks/predictive.py [--device cpu|cuda] [--neurons 8000] [--trials 5000]
                                    [--steps N] [--warmup N] [--configs paper,demo]

Default steps: 30 (demo) and 4 (paper) on the CPU, 50 each on a GPU; the default CPU run takes
about 45 s on 2 cores.
"""
import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np   # noqa: E402
import torch   # noqa: E402

from neuralreg_schema.compute.predictive.network import PredictiveNetwork   # noqa: E402
from neuralreg_schema.compute.common.runtime import describe_device, resolve_device   # noqa: E402
from neuralreg_schema.compute.predictive.train import (default_config,   # noqa: E402
                                                       train_step)


def synthetic(n_trials: int, n_neurons: int, device: torch.device, seed: int = 0):
    """Images (n, 1, 36, 64) gray levels, behavior (n, 3), eye (n, 2), responses (n, neurons)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n_trials, 1, 36, 64, generator=g) * 255
    behavior = torch.randn(n_trials, 3, generator=g)
    eye = torch.randn(n_trials, 2, generator=g)
    rates = torch.rand(n_neurons, generator=g) * 3 + 0.1
    responses = torch.poisson(rates.expand(n_trials, -1).contiguous(), generator=g)
    return [t.to(device) for t in (images, behavior, eye, responses)]


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10   # Linux: KiB


def bench(name: str, data, device: torch.device, steps: int, warmup: int) -> dict:
    images, behavior, eye, responses = data
    cfg = default_config(name)
    torch.manual_seed(0)
    net = PredictiveNetwork(cfg, responses.shape[1])
    net.set_statistics(127.5, 70.0, np.zeros(3), np.ones(3), np.zeros(2), np.ones(2),
                       responses.std(dim=0).cpu().numpy())
    net.init_bias(responses.mean(dim=0).cpu())
    net.to(device).train()
    if device.type == "cuda":
        net.core.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    bs = cfg["batch_size"]
    gen = torch.Generator(device="cpu").manual_seed(1)

    def run(n: int) -> torch.Tensor:
        loss = torch.zeros((), device=device)
        for _ in range(n):
            idx = torch.randint(len(images), (bs,), generator=gen).to(device)
            loss = loss + train_step(net, opt, images[idx], behavior[idx], eye[idx], responses[idx])
        return loss

    run(warmup)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    loss = run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    if not torch.isfinite(loss):
        raise RuntimeError(f"{name}: non-finite loss in the benchmark")
    return dict(config=name, batch=bs, steps=steps, trials_per_s=steps * bs / seconds,
                ms_per_step=1000 * seconds / steps, parameters=net.n_parameters(),
                feature_map="x".join(map(str, net.feature_shape)),
                peak_mib=peak_memory_mib(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--trials", type=int, default=5000, help="training trials of synthetic data")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per config")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--configs", default="demo,paper")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {describe_device(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; {args.trials} trials x {args.neurons} neurons")
    data = synthetic(args.trials, args.neurons, device)
    for name in args.configs.split(","):
        if args.steps is not None:
            steps = args.steps
        else:
            steps = 50 if device.type == "cuda" else (4 if name == "paper" else 30)
        warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
        r = bench(name, data, device, steps, warmup)
        print(f"{r['config']:>6}: {r['trials_per_s']:8.1f} trials/s  {r['ms_per_step']:8.1f} ms/step "
              f"(batch {r['batch']}, {r['steps']} steps)  {r['parameters']:,} parameters  "
              f"core output {r['feature_map']}  peak memory {r['peak_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
