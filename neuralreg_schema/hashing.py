"""Content addresses of configuration rows: one hash for every schema (rule 5 of the design:
configurations are rows keyed by a hash of their content).

Neutral ground: imports neither torch nor datajoint, so the schema modules, the checkpoint store and
the compute layer can all use it without importing one another.
"""
from __future__ import annotations

import hashlib
import json


def config_hash(config: dict) -> str:
    """md5 of the canonical JSON of a config dict (keys sorted, no whitespace): the content address
    of a configuration row; equal dicts give equal hashes whatever their key order."""
    return hashlib.md5(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


__all__ = ["config_hash"]
