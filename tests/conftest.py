"""Shared fixtures and collection rules. Integration tests get one unique schema prefix per run,
dropped afterwards, and a private object store in a temporary folder; a test that needs a prefix of
its own (for a CLI or worker process, which binds one per process) asks for `fresh_prefix`.
Everything under tests/integration is marked `integration`; `-m "not slow"` leaves out the tests
marked `slow`."""
import os
from pathlib import Path

import numpy as np
import pytest

from neuralreg_schema.compute.recording import ImageSet, ScanRecording
from tests.helpers import new_prefix

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/integration `integration` (it needs the database)."""
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def make_recording(animal_id=1, session=1, scan_idx=1, *, image_set="toy", n_neurons=6, n_single=20,
                   n_oracle=6, n_repeats=3, seed=0):
    """A small hand-made recording: the first n_single images once, then oracle images repeated."""
    rng = np.random.default_rng(seed)
    n_images = n_single + n_oracle
    images = ImageSet(image_set, np.arange(n_images, dtype=np.int64) + 100,
                      rng.uniform(0, 255, (n_images, 36, 64)).astype(np.float32), "random test images")
    ids = np.r_[np.arange(n_single), np.repeat(np.arange(n_single, n_images), n_repeats)] + 100
    order = np.r_[np.arange(n_single), n_single + rng.permutation(n_oracle * n_repeats)]
    ids = ids[order]
    n_t = len(ids)
    tiers = np.where(np.arange(n_t) < n_single, "train", "oracle").astype("<U10")
    tiers[n_single - 3:n_single] = "validation"
    scan = ScanRecording(
        animal_id, session, scan_idx, image_set, "simulated",
        unit_ids=np.arange(n_neurons, dtype=np.int64) + 7,
        cell_positions=rng.uniform(0, 500, (n_neurons, 3)).astype(np.float32),
        trial_idx=np.arange(n_t, dtype=np.int64) * 2, image_ids=ids, tiers=tiers,
        responses=rng.poisson(3, (n_t, n_neurons)).astype(np.float32),
        behavior=rng.normal(size=(n_t, 3)).astype(np.float32),
        pupil_center=rng.normal(size=(n_t, 2)).astype(np.float32))
    return images, scan


@pytest.fixture(scope="session")
def prefix():
    return new_prefix("t")


@pytest.fixture(scope="session")
def modules(prefix, tmp_path_factory):
    """The activated pipeline (unique prefix, temporary store); schemas dropped at the end."""
    os.environ["NEURALREG_STORE"] = str(tmp_path_factory.mktemp("store"))
    os.environ["NEURALREG_PREFIX"] = prefix
    from neuralreg_schema import db, pipeline
    target = db.configured_target()
    user, password = db.app_credentials()
    if not db.can_login(target, user, password):
        pytest.fail(f"cannot log in to {target.host}:{target.port} as {user!r}: run `neuralreg db up` first")
    mods = pipeline.activate(prefix)
    yield mods
    pipeline.drop_all(prefix)


@pytest.fixture
def fresh_prefix(modules):
    """A schema prefix of the test's own, on the session's server and store (`modules` checked the
    login and set NEURALREG_STORE); every schema under it is dropped afterwards."""
    from neuralreg_schema import pipeline
    prefix = new_prefix("f")
    try:
        yield prefix
    finally:
        pipeline.drop_all(prefix)
