"""Resumable state of a job, kept in the object store: one class for every table whose
`make_compute` runs for long (PredictiveModel, RegularizedClassifier, AttackResult).

A trainer (compute/common/training.py contract) saves a `TrainingState` through `StoreCheckpoint.save` after
every epoch, and compute/evaluation/attacks.run_attack its `AttackProgress` after finished batches; each reads
it back through `load` when the job is run again after a crash; the table's `make_insert` removes it
once the row is in.
"""
from __future__ import annotations

import numpy as np

from . import settings
from .hashing import config_hash


class StoreCheckpoint:
    """The training state of one job in the object store (any protocol DataJoint's stores support),
    at `_checkpoints/<database>/<table>/<md5 of the key>.pt`; written atomically on a file store."""

    def __init__(self, table, key: dict):
        from datajoint.storage import get_storage_backend
        dj_ = settings.configure()
        self.backend = get_storage_backend(dj_.config.get_store_spec(settings.STORE))
        plain = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in dict(key).items()}
        self.path = f"_checkpoints/{table.database}/{table.table_name}/{config_hash(plain)}.pt"

    def load(self) -> bytes | None:
        return self.backend.get_buffer(self.path) if self.backend.exists(self.path) else None

    def save(self, state: bytes) -> None:
        if self.backend.protocol == "file":
            # DataJoint's put_buffer never replaces an existing file (its store is content-addressed):
            # write a temporary file and rename it over the old checkpoint (atomic on POSIX)
            import os
            import tempfile
            from pathlib import Path
            target = Path(self.backend._full_path(self.path))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".saving")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(state)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        else:
            self.backend.put_buffer(state, self.path)      # fsspec pipe_file replaces the object

    def remove(self) -> None:
        if self.backend.exists(self.path):
            self.backend.remove(self.path)


__all__ = ["StoreCheckpoint"]
