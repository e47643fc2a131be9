"""Known-answer populations: how close each simulated population's similarity is to the pixel targets,
before any training (docs/controls.md, issue 20).

For each tuning of compute/experiment/simulate.TUNINGS (mouse, low, high), one scan of the simulated
experiment (profile and seed as given; every tuning sees the same images): the noise-free responses
of its neurons to the first N images of the set (the simulator's ground truth, `noise_free`: the
expected spike counts at the session-mean behaviour and the centred eye), z-scored per neuron, give
Eq. 2's similarity; its off-diagonal entries are correlated (Pearson, `rsa.matrix_correlation`) with
the lowpass and highpass pixel targets (compute/similarity/pixel_targets.py, blur sigma 2 px) of the
same images, and with the similarity of the images' RMS contrast (|c_i - c_j| turned into a
similarity: -|c_i - c_j| centred, a contrast-only representation). One line per tuning.

What the pipeline makes of the same populations (S_oracle from spikes with Eq. 1's weights, S_model
from the trained predictive models) is in the report's population_targets.csv, from the tables.
No database; about a minute per tuning at the demo profile on 2 CPU cores.

    python benchmarks/populations.py [--profile demo] [--seed 0] [--images 600] [--scan 0]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def contrast_similarity(images: np.ndarray) -> np.ndarray:
    """Similarity of a one-dimensional representation, the RMS contrast of each image: Eq. 2 of a
    single feature is +-1 only, so use the negative distance -|c_i - c_j|, standardised."""
    c = images.reshape(len(images), -1).std(axis=1)
    d = -np.abs(c[:, None] - c[None, :])
    return (d - d.mean()) / d.std()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=600, help="first N images of the set (default 600)")
    p.add_argument("--scan", type=int, default=0, help="which scan of the experiment (default 0)")
    p.add_argument("--tunings", nargs="+", default=None)
    a = p.parse_args(argv)
    from neuralreg_schema.compute.experiment import simulate
    from neuralreg_schema.compute.similarity import pixel_targets, rsa

    rows = []
    targets = None
    for tuning in a.tunings or list(simulate.TUNINGS):
        t0 = time.time()
        exp = simulate.simulate_experiment(a.profile, a.seed, tuning=tuning)
        images = exp.image_set.images[:a.images] / 255.0
        if targets is None:
            targets = {m: pixel_targets.pixel_similarity(images, m) for m in pixel_targets.METHODS}
            targets["contrast"] = contrast_similarity(images)
            print(f"targets on {len(images)} images of sim-{a.profile}-{a.seed}: r(lowpass, highpass) = "
                  f"{rsa.matrix_correlation(targets['lowpass'], targets['highpass']):.3f}", flush=True)
        scan = exp.scans[a.scan]
        free = scan.ground_truth["noise_free"][:a.images].astype(np.float64)
        z = (free - free.mean(0)) / np.maximum(free.std(0), 1e-12)
        s = rsa.similarity(z, dtype=np.float64)
        r = {m: rsa.matrix_correlation(s, t) for m, t in targets.items()}
        rows.append((tuning, scan.n_neurons, r, float(rsa.upper(s).std()), time.time() - t0))
        print(f"{tuning:6s} {scan.n_neurons} neurons: r(noise-free S, lowpass) = {r['lowpass']:.3f}, "
              f"r(., highpass) = {r['highpass']:.3f}, r(., contrast) = {r['contrast']:.3f}; "
              f"off-diagonal s.d. {rows[-1][3]:.3f} ({rows[-1][4]:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    main()
