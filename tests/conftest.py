"""Shared fixtures and collection rules. Integration tests get one unique schema prefix per run,
dropped afterwards, and a private object store in a temporary folder; a test that needs a prefix of
its own (for a CLI or worker process, which binds one per process) asks for `fresh_prefix`.
Everything under tests/integration is marked `integration`; `-m "not slow"` leaves out the tests
marked `slow`."""
import os
from pathlib import Path

import pytest

from tests.helpers import new_prefix

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/integration `integration` (it needs the database)."""
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


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
