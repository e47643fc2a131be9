"""Benchmark: the similarity matrices of compute.similarity.rsa (Eqs. 2-6) and the VGG control at real size.

Measures, in one run, on random data (no database):
  S_model   Eq. 6, default 5000 stimuli x 8000 neurons (float32 predictions), float32 product; and
            the largest deviation from the same matrix computed with a float64 product
  S_oracle  Eq. 3 (and Eq. 5, Fig. 1D pairs), default 100 oracle images x 10 repeats x 8000 neurons
  VGG       conv3_1 features of 5000 images at 36 x 64 and Eq. 2 on them (36864 features per image),
            with RANDOM weights (He initialisation, not ImageNet): a timing and memory figure only
Memory, per step:
  traced    peak of tracemalloc during the step: numpy and python allocations (numpy reports its
            buffers to tracemalloc), not torch's tensors; the step's inputs are allocated before
  maxrss    growth of the process's peak resident set size (resource.getrusage ru_maxrss) during
            the step: everything, torch included, but only what exceeds the earlier peak shows
One line per figure. Default run: about a minute on 2 CPU cores.

    python benchmarks/similarity.py [--stimuli 5000] [--neurons 8000] [--vgg-images 5000]
"""
import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10      # KiB on Linux


class Measured:
    """with Measured('name') as m: ...  -> prints seconds, traced peak and maxrss growth."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.rss = maxrss_mib()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        self.rss_growth = maxrss_mib() - self.rss
        if exc[0] is None:
            print(f"{self.name}: {self.seconds:.1f} s, traced peak {self.traced:.0f} MiB, "
                  f"maxrss +{self.rss_growth:.0f} MiB", flush=True)
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stimuli", type=int, default=5000)
    parser.add_argument("--neurons", type=int, default=8000)
    parser.add_argument("--oracle-images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--vgg-images", type=int, default=5000, help="0 skips the VGG step")
    parser.add_argument("--vgg-layer", default="conv3_1")
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--no-float64-check", action="store_true",
                        help="skip the float64 reference of S_model (saves its time and memory)")
    args = parser.parse_args()

    import torch

    from neuralreg_schema.compute.experiment import reliability
    from neuralreg_schema.compute.similarity import rsa
    from neuralreg_schema.compute.similarity import vgg
    print(f"numpy {np.__version__}, torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"process maxrss at start {maxrss_mib():.0f} MiB", flush=True)
    rng = np.random.default_rng(0)

    # ---- Eq. 6 at the size of the regularization target
    n, d = args.stimuli, args.neurons
    latent = rng.normal(size=(n, 64)).astype(np.float32)
    predictions = np.exp(0.3 * latent @ rng.normal(size=(64, d)).astype(np.float32)
                         + rng.normal(scale=0.5, size=(n, d)).astype(np.float32)).astype(np.float32)
    w, v = rng.uniform(0.1, 2.0, d), rng.uniform(-0.1, 0.8, d)
    print(f"S_model input: predictions {n} x {d} float32 ({predictions.nbytes / 2**20:.0f} MiB), "
          f"{int(np.sum(v > 0))} neurons with v_a > 0", flush=True)
    with Measured(f"S_model (Eq. 6) {n} x {n} from {d} neurons, float32 product, block {args.block}"):
        s_model = rsa.model_similarity(predictions, w, v, block=args.block)
    print(f"  result {s_model.shape} {s_model.dtype} ({s_model.nbytes / 2**20:.0f} MiB), "
          f"off-diagonal mean {rsa.upper(s_model).mean():.3f}", flush=True)
    if not args.no_float64_check:
        with Measured("S_model with a float64 product (reference)"):
            s_model64 = rsa.model_similarity(predictions, w, v, block=args.block, dtype=np.float64)
        print(f"  float32 vs float64 product: max |difference| {np.abs(s_model - s_model64).max():.2e}",
              flush=True)
        del s_model64
    del predictions, s_model

    # ---- Eq. 3 / 5 / Fig. 1D on the oracle trials
    n_img, t = args.oracle_images, args.repeats
    ids = np.repeat(np.arange(n_img) + 10_000, t)
    rng.shuffle(ids)
    signal = rng.gamma(2.0, 1.0, size=(n_img, d)).astype(np.float32)
    responses = (signal[ids - 10_000] + rng.gamma(1.0, 1.0, size=(len(ids), d))).astype(np.float32)
    w_oracle = reliability.snr_weights(responses, ids).weight
    with Measured(f"S_oracle (Eq. 3) {n_img} images x {t} repeats x {d} neurons"):
        s_oracle, _ = rsa.oracle_similarity(responses, ids, w_oracle)
    with Measured("  + Eq. 5 repeat fluctuations"):
        repeat = rsa.repeat_fluctuations(responses, ids, w_oracle)
    with Measured("  + Fig. 1D trial pairs"):
        pairs = rsa.trial_pair_similarity(responses, ids, w_oracle)
    print(f"  {len(repeat)} repeat pairs, {len(pairs[0])} trial pairs of different images", flush=True)
    del responses, repeat, pairs

    # ---- the VGG control
    if args.vgg_images:
        torch.manual_seed(0)
        state = vgg.VGG19Features(args.vgg_layer).state_dict()       # RANDOM weights, not ImageNet
        images = rng.uniform(0, 255, (args.vgg_images, 36, 64)).astype(np.float32)
        label = f"VGG19 {args.vgg_layer} (RANDOM weights), {args.vgg_images} images at 36 x 64"
        with Measured(f"{label}: features"):
            features = vgg.vgg_features(images, state, args.vgg_layer)
        print(f"  features {features.shape} float32 ({features.nbytes / 2**20:.0f} MiB)", flush=True)
        with Measured(f"{label}: Eq. 2 on the features (in place)"):
            s_vgg = rsa.similarity(features, block=args.block, overwrite_input=True)
        print(f"  result {s_vgg.shape}, off-diagonal mean {rsa.upper(s_vgg).mean():.3f}", flush=True)
    print(f"process peak RSS: {maxrss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
