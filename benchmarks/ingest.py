"""Benchmark: reading and ingesting one Sensorium-format scan at real size.

Writes a synthetic scan in the published layout (default 6000 trials x 8000 neurons, 144x256
images: the size of a real Sensorium 2022 scan), then measures, in one run:
  read     seconds and peak memory of compute.experiment.sensorium.read_sensorium (folder and zip)
  ingest   seconds of experiment.ingest into a throw-away schema prefix (dropped afterwards)
  neuron   seconds of Neuron.populate (Eq. 1) for the scan
Prints one line per figure. Needs the database (`neuralreg db up`).

    python benchmarks/ingest.py [--trials 6000] [--neurons 8000]
"""
import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sensorium_fixture import write_sensorium_fixture, zip_folder   # noqa: E402


def timed_read(path):
    from neuralreg_schema.compute.experiment import sensorium
    tracemalloc.start()
    started = time.perf_counter()
    result = sensorium.read_sensorium(path)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6000)
    parser.add_argument("--neurons", type=int, default=8000)
    args = parser.parse_args()
    n_oracle, n_repeats = 100, 10
    n_once = args.trials - n_oracle * n_repeats
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        folder = write_sensorium_fixture(Path(tmp), n_neurons=args.neurons, n_train=int(n_once * 0.9),
                                         n_validation=n_once - int(n_once * 0.9), n_oracle=n_oracle,
                                         n_repeats=n_repeats, animal_id=29999)
        archive = zip_folder(folder, Path(tmp) / f"{folder.name}.zip")
        print(f"fixture: {args.trials} trials x {args.neurons} neurons written in "
              f"{time.perf_counter() - started:.1f} s")
        (image_set, scan), seconds, peak = timed_read(folder)
        print(f"read folder: {seconds:.1f} s, peak traced memory {peak:.0f} MiB")
        _, seconds, peak = timed_read(archive)
        print(f"read zip: {seconds:.1f} s, peak traced memory {peak:.0f} MiB")

        from neuralreg_schema import pipeline
        prefix = f"neuralreg_bench{uuid.uuid4().hex[:6]}"
        experiment = pipeline.activate(prefix)["experiment"]
        try:
            started = time.perf_counter()
            experiment.ingest(image_set, [scan])
            print(f"ingest: {time.perf_counter() - started:.1f} s "
                  f"({scan.n_trials / (time.perf_counter() - started):.0f} trials/s)")
            started = time.perf_counter()
            experiment.Neuron.populate()
            print(f"Neuron (Eq. 1): {time.perf_counter() - started:.1f} s for {scan.n_neurons} units")
        finally:
            pipeline.drop_all(prefix)
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
