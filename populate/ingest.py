"""Ingest recordings into the experiment schema: the simulated experiment and Sensorium 2022 scans."""
from __future__ import annotations

import time
from pathlib import Path

from neuralreg_schema import pipeline


def _say(message: str) -> None:
    print(message, flush=True)


def group_name(image_set: str, tuning: str = "mouse") -> str:
    """The scan group of a simulated population: the image set's name ('sim-demo-0') for the mouse
    tuning, '<image set>-<tuning>' ('sim-demo-0-low') for the others."""
    return image_set if tuning == "mouse" else f"{image_set}-{tuning}"


def ingest_simulated(prefix: str, profile: str, seed: int, tuning: str = "mouse") -> list[dict]:
    """Simulate and ingest an experiment whose neurons are tuned as `tuning` (compute/experiment/
    simulate.TUNINGS); its scans also form a ScanGroup (`group_name`). Every tuning of one profile and
    seed shows the same image set."""
    from neuralreg_schema.compute.experiment import simulate
    simulate.tuning_of(tuning)                      # an unknown tuning is refused before any schema is made
    modules = pipeline.activate(prefix)
    experiment, similarity = modules["experiment"], modules["similarity"]
    started = time.time()
    _say(f"simulating the '{profile}' experiment (seed {seed}, {tuning} tuning)")
    sim = simulate.simulate_experiment(profile, seed=seed, progress=lambda m: _say(f"  {m}"), tuning=tuning)
    _say(f"  {len(sim.scans)} scans, {len(sim.image_set.image_ids)} images, "
         f"{sum(s.n_neurons for s in sim.scans)} neurons in {time.time() - started:.1f} s")
    source = f"{profile}/seed={seed}" + (f"/tuning={tuning}" if tuning != "mouse" else "")
    keys = experiment.ingest(sim.image_set, sim.scans, source_path=source, progress=_say)
    name = group_name(sim.image_set.name, tuning)
    similarity.ScanGroup.add(name, [experiment.scan_key(s) for s in sim.scans],
                             description=f"all scans of the simulated '{profile}' experiment, seed {seed}"
                                         + (f", {tuning}-tuned neurons" if tuning != "mouse" else ""))
    _say(f"  scan group {name!r}: {len(sim.scans)} scans")
    return keys


def ingest_sensorium(prefix: str, paths: list[str]) -> list[dict]:
    """Read and ingest Sensorium 2022 static scans (folders or zips); a format error names the file.

    Every path must exist before anything is created, and no schema is created before the first scan
    has been read and validated. Each scan is committed on its own: when a later path fails, the scans
    committed before it are reported (they stay; rerunning skips them) and the error is raised."""
    from tqdm import tqdm
    from neuralreg_schema.compute.experiment import sensorium
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise sensorium.SensoriumFormatError(missing[0], "no such folder or file"
                                             + (f" (nor {len(missing) - 1} more of the paths)" if len(missing) > 1
                                                else "") + ": nothing ingested")
    experiment = None
    keys, done = [], []
    for path in paths:
        try:
            with tqdm(desc=Path(path).name[:40], unit="trial", leave=False) as bar:
                def progress(n, total):
                    bar.total = total
                    bar.n = n
                    bar.refresh()
                try:
                    image_set, scan = sensorium.read_sensorium(path, progress=progress)
                except sensorium.SensoriumFormatError as exc:
                    if str(Path(path)) in str(exc):
                        raise
                    raise sensorium.SensoriumFormatError(path, str(exc)) from None
            for note in scan.notes:
                _say(f"  note: {note}")
            if experiment is None:
                experiment = pipeline.activate(prefix)["experiment"]
            new = experiment.ingest(image_set, [scan], source_path=Path(path).name, progress=_say)
        except BaseException:
            if done:
                _say(f"committed before the error: {len(done)} scan(s) from {', '.join(done)} "
                     f"({len(keys)} new: {', '.join(_scan_label(k) for k in keys) or 'none'}); they stay")
            raise
        keys += new
        done.append(path)
    return keys


def _scan_label(key: dict) -> str:
    return f"{key['animal_id']}-{key['session']}-{key['scan_idx']}"
