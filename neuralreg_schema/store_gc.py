"""`neuralreg store gc`: the object-store files of a prefix's schemas that no row references.

Files are left behind by deleted rows (a cascade delete, a recomputed model), by a failed or killed
insert (the file is written before its row), and by a killed ingest. DataJoint's
`dj.gc.GarbageCollector` finds them per schema (`_hash/<schema>/...` and `_schema/<schema>/...` of the
store `main`); other prefixes' files, and training checkpoints (`_checkpoints/`), are never looked at.

Dry run by default: it lists what it would remove and removes nothing. With `delete=True` it removes
the orphans older than `min_age` seconds only (default MIN_AGE): a worker writes its file a moment
before the row that references it, and a younger orphan may be such a file. A store whose files'
ages cannot be read (S3) keeps every orphan unless `min_age` is 0 (stop the workers first).
"""
from __future__ import annotations

import time
from pathlib import Path

from . import settings

MIN_AGE = 3600.0      # s: orphans younger than this are kept (an insert in progress writes its file first)


def _age(spec: dict, path: str) -> float | None:
    """Seconds since the file (or folder, its newest entry) was last changed; None when not a file store."""
    if spec.get("protocol", "file") != "file":
        return None
    full = Path(spec["location"]) / path
    try:
        if full.is_dir():
            stamps = [p.stat().st_mtime for p in full.rglob("*")] + [full.stat().st_mtime]
            return time.time() - max(stamps)
        return time.time() - full.stat().st_mtime
    except FileNotFoundError:
        return None


def collect(modules: dict, *, delete: bool = False, min_age: float = MIN_AGE) -> dict:
    """Find (and with `delete`, remove) the store files of the modules' schemas that no row references.
    Returns {'orphans': [{'path', 'bytes', 'age_s'}], 'kept_young': n, 'deleted': n, 'bytes_freed': n,
    'referenced': n, 'stored': n, 'dry_run': bool}."""
    if min_age < 0:
        raise ValueError(f"--min-age must be >= 0 seconds, got {min_age}")
    dj = settings.configure()
    from datajoint import gc as djgc
    schemas = list({id(m.schema): m.schema for m in modules.values()}.values())   # an extension shares its schema
    collector = djgc.GarbageCollector(*schemas, store=settings.STORE)
    report = collector.collect(dry_run=True)
    spec = dj.config.stores[settings.STORE]
    sizes = {}
    for schema in schemas:
        sizes.update(collector.list_hash_paths(schema.database))
        sizes.update(collector.list_schema_paths(schema.database))
    orphans = []
    for kind, paths in (("hash", report["orphaned_hash_paths"]), ("schema", report["orphaned_schema_paths"])):
        for path in paths:
            age = _age(spec, path)
            orphans.append({"path": path, "kind": kind, "bytes": int(sizes.get(path, 0)),
                            "age_s": None if age is None else round(age, 1)})
    deleted, freed, young = 0, 0, 0
    if delete:
        if report.get("scan_errors"):
            raise RuntimeError(f"the store could not be listed completely ({report['scan_errors'][:3]}): nothing "
                               "deleted, since a partial listing could count live files as orphans")
        for orphan in orphans:
            if min_age > 0 and (orphan["age_s"] is None or orphan["age_s"] < min_age):
                young += 1
                continue
            removed = (djgc.delete_path(orphan["path"], settings.STORE, config=collector.config)
                       if orphan["kind"] == "hash" else collector.delete_schema_path(orphan["path"]))
            if removed:
                deleted += 1
                freed += orphan["bytes"]
    else:
        young = sum(1 for o in orphans if min_age > 0 and (o["age_s"] is None or o["age_s"] < min_age))
    return {"orphans": orphans, "kept_young": young, "deleted": deleted, "bytes_freed": freed,
            "referenced": report["hash_paths_referenced"] + report["schema_paths_referenced"],
            "stored": report["hash_paths_stored"] + report["schema_paths_stored"], "dry_run": not delete,
            "store": spec.get("location", "")}
