"""Benchmark: a paper-size similarity matrix through the tables (5000 x 5000 from 8000 neurons).

Ingests one synthetic scan (default 5000 single-trial images + 100 oracle images x 10 repeats,
8000 neurons, Poisson responses) into a throw-away schema prefix, then measures in one run:
  neuron   seconds of Neuron.populate (Eq. 1)
  data     seconds and peak traced (tracemalloc) memory of SimilarityMatrix.populate for 'data/stimulus'
           (Eq. 2 on 5000 images: fetch 6000 x 8000 responses, compute, write 100 MB to the store)
  oracle   seconds of SimilarityMatrix.populate for 'oracle/oracle' (Eq. 3)
  average  seconds of AveragedSimilarity.populate over a one-scan group (read + write 5000 x 5000)
  fetch    seconds to load the stored 5000 x 5000 matrix back
The prefix and its store folders are dropped at the end. Needs the database (`neuralreg db up`).

    python benchmarks/similarity_table.py [--images 5000] [--neurons 8000]
"""
import argparse
import resource
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_scan(n_images: int, n_neurons: int, seed: int = 0):
    from neuralreg_schema.compute.experiment.recording import ImageSet, ScanRecording
    rng = np.random.default_rng(seed)
    n_oracle, n_repeats = 100, 10
    n_set = n_images + n_oracle
    ids = np.arange(n_set, dtype=np.int64)
    images = ImageSet("bench-similarity", ids, rng.uniform(0, 255, (n_set, 36, 64)).astype(np.float32),
                      "random images (benchmark)")
    trial_ids = np.r_[ids[:n_images], np.repeat(ids[n_images:], n_repeats)]
    n_trials = len(trial_ids)
    tiers = np.r_[np.where(np.arange(n_images) < int(0.9 * n_images), "train", "validation"),
                  np.full(n_oracle * n_repeats, "oracle")].astype("<U10")
    # responses with image-driven structure so the matrices are not pure noise
    drive = rng.gamma(2.0, 1.0, (n_set, n_neurons)).astype(np.float32)
    responses = rng.poisson(drive[trial_ids]).astype(np.float32)
    scan = ScanRecording(
        29998, 1, 1, images.name, "simulated", unit_ids=np.arange(n_neurons, dtype=np.int64),
        cell_positions=rng.uniform(0, 500, (n_neurons, 3)).astype(np.float32),
        trial_idx=np.arange(n_trials, dtype=np.int64), image_ids=trial_ids, tiers=tiers,
        responses=responses, behavior=rng.normal(size=(n_trials, 3)).astype(np.float32),
        pupil_center=rng.normal(size=(n_trials, 2)).astype(np.float32))
    return images, scan


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--neurons", type=int, default=8000)
    args = parser.parse_args()
    from neuralreg_schema import pipeline
    prefix = f"neuralreg_bench{uuid.uuid4().hex[:8]}"
    images, scan = synthetic_scan(args.images, args.neurons)
    modules = pipeline.activate(prefix)
    exp, sim = modules["experiment"], modules["similarity"]
    try:
        started = time.perf_counter()
        exp.ingest(images, [scan])
        print(f"ingest   {time.perf_counter() - started:7.1f} s   ({scan.n_trials} trials x {scan.n_neurons} neurons)")
        key = exp.scan_key(scan)
        started = time.perf_counter()
        exp.Neuron.populate(key)
        print(f"neuron   {time.perf_counter() - started:7.1f} s")
        data = sim.SimilarityConfig.add("data", "stimulus")
        oracle = sim.SimilarityConfig.add("oracle", "oracle")
        tracemalloc.start()
        started = time.perf_counter()
        sim.SimilarityMatrix.populate(key, data, reserve_jobs=True)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        n = (sim.SimilarityMatrix & key & data).fetch1("n_images")
        print(f"data     {seconds:7.1f} s   {n} x {n} matrix; peak traced memory {peak:.0f} MiB "
              f"(numpy buffers; process peak RSS so far {maxrss_mib():.0f} MiB)")
        started = time.perf_counter()
        sim.SimilarityMatrix.populate(key, oracle, reserve_jobs=True)
        print(f"oracle   {time.perf_counter() - started:7.1f} s")
        sim.ScanGroup.add("bench", [key])
        started = time.perf_counter()
        sim.AveragedSimilarity.populate({"scan_group": "bench"}, data, reserve_jobs=True)
        print(f"average  {time.perf_counter() - started:7.1f} s")
        started = time.perf_counter()
        matrix = np.asarray((sim.SimilarityMatrix & key & data).fetch1("matrix").load())
        print(f"fetch    {time.perf_counter() - started:7.1f} s   {matrix.shape} {matrix.dtype}, "
              f"{matrix.nbytes / 2**20:.0f} MiB")
    finally:
        pipeline.drop_all(prefix)


if __name__ == "__main__":
    main()
