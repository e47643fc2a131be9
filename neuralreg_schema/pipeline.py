"""Bind the schema modules to databases: `activate(prefix)` (DataJoint Elements style).

Schemas are named f"{prefix}_{module}", so the demo, the tests and production can share a server
under different prefixes. Modules are bound upstream first. Each database is created with the
utf8mb4_bin collation (case-sensitive string keys, as DataJoint 2 assumes) before DataJoint sees it,
whatever the server's default collation is.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from . import settings

# upstream first
MODULES = ("experiment", "predictive", "similarity", "classifier", "evaluation")
# modules whose tables live in another module's schema, declared after that module's own tables
# (imported with it, so they are bound with it; the worker populates their POPULATE_ORDER after the
# schema module's own): {schema module: (modules,)}; activate() returns them too, under their own names
EXTENSIONS = {"evaluation": ("corruptions", "autoattack")}

_active: dict[str, str] = {}


PREFIX_RULE = ("a prefix is 'neuralreg' or 'neuralreg_<name>' (<name>: lowercase letters, digits and '_'; "
               "at most 41 characters in all): the database accounts that "
               "`neuralreg db up` creates may use the schemas named neuralreg_* only")


def check_prefix(prefix: str) -> str:
    """`prefix` when it keeps the rule (PREFIX_RULE), else ValueError stating the rule and a prefix
    that keeps it (checked before any connection, so a prefix outside the accounts' grants never
    reaches the server as an 'Access denied')."""
    if not isinstance(prefix, str) or not re.fullmatch(r"neuralreg(_[a-z0-9_]{1,31})?", prefix):
        name = re.sub(r"[^a-z0-9_]+", "_", str(prefix).lower()).strip("_")
        example = "" if not name or name.startswith("neuralreg") else f" (e.g. neuralreg_{name[:31]})"
        raise ValueError(f"schema prefix {prefix!r} breaks the rule: {PREFIX_RULE}{example}")
    return prefix


def schema_names(prefix: str) -> dict[str, str]:
    check_prefix(prefix)
    return {m: f"{prefix}_{m}" for m in MODULES}


def _modules():
    from . import autoattack, classifier, corruptions, evaluation, experiment, predictive, similarity
    return {"experiment": experiment, "predictive": predictive, "similarity": similarity,
            "classifier": classifier, "evaluation": evaluation, "corruptions": corruptions, "autoattack": autoattack}


def activate(prefix: str = settings.DEFAULT_PREFIX, *, create_tables: bool = True) -> dict:
    """Bind every schema module to `<prefix>_<module>`, creating databases and tables as needed.

    Returns {module name: module} (MODULES and their EXTENSIONS). Calling it again with the same prefix is a no-op; a process can
    bind one prefix only (DataJoint schema objects are bound once).
    """
    dj = settings.configure()
    names = schema_names(prefix)
    if _active and _active.get("prefix") != prefix:
        raise RuntimeError(f"this process is bound to prefix {_active['prefix']!r}; cannot switch to {prefix!r}")
    connection = dj.conn()
    modules = _modules()
    for module, db in names.items():
        if connection.adapter.backend == "mysql" and not connection.query(
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", args=(db,)).fetchall():
            # only when missing: CREATE DATABASE IF NOT EXISTS needs the CREATE right, which a worker lacks
            connection.query(
                f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        modules[module].schema.activate(db, connection=connection, create_tables=create_tables)
    _active["prefix"] = prefix
    return modules


def active_prefix() -> str | None:
    return _active.get("prefix")


def drop_all(prefix: str) -> None:
    """Drop every schema of `prefix`, downstream first, and delete their files from a file store."""
    dj = settings.configure()
    connection = dj.conn()
    existing = {row[0] for row in connection.query(connection.adapter.list_schemas_sql()).fetchall()}
    for module in reversed(MODULES):
        db = f"{prefix}_{module}"
        if db not in existing:
            continue
        schema = dj.Schema(db, connection=connection, create_schema=False, create_tables=False)
        schema.drop(prompt=False)
        spec = dj.config.stores.get(settings.STORE, {})
        if spec.get("protocol") == "file":
            for section in (spec.get("schema_prefix", "_schema"), spec.get("hash_prefix", "_hash"),
                            "_checkpoints"):
                shutil.rmtree(Path(spec["location"]) / section / db, ignore_errors=True)


def existing_prefixes(connection=None) -> dict[str, list[str]]:
    """{prefix: its modules with a schema on the server} for every schema named <prefix>_<module>
    (read-only: one query of the server's schema list)."""
    if connection is None:
        connection = settings.configure().conn()
    rows = connection.query(connection.adapter.list_schemas_sql()).fetchall()
    found: dict[str, list[str]] = {}
    for (name,) in rows:
        for module in MODULES:
            if name.endswith(f"_{module}") and len(name) > len(module) + 1:
                found.setdefault(name[:-len(module) - 1], []).append(module)
    return {prefix: [m for m in MODULES if m in mods] for prefix, mods in sorted(found.items())}


class SchemasMissing(LookupError):
    """The prefix has no (or not all) schemas on the server; the message lists the prefixes that exist."""


def require_schemas(prefix: str, what: str, first_steps: str) -> None:
    """Refuse, creating nothing, a command that needs an existing study (`what`: e.g. "nothing to
    populate") when `prefix` lacks a schema: SchemasMissing states it, the `first_steps` that create
    the study, and the prefixes that exist. Read-only (one query of the server's schema list): a command
    that fails its checks must not leave empty schemas behind."""
    existing = existing_prefixes()
    if len(existing.get(prefix, [])) < len(MODULES):
        others = ", ".join(p for p, mods in existing.items() if len(mods) == len(MODULES)) or "none"
        raise SchemasMissing(f"{what}: prefix {prefix!r} has no schemas on {settings.connection_summary()} "
                             f"(nothing was created now); {first_steps}. Prefixes with schemas here: {others}")


def open_existing(prefix: str) -> dict:
    """Bind the schema modules to the existing schemas of `prefix`, creating no database and no table
    (what read-only commands use; a table missing from an existing schema stays undeclared:
    `Table().is_declared` is False). Raises SchemasMissing, naming the prefixes that do exist, when a
    schema of `prefix` is missing."""
    dj = settings.configure()
    names = schema_names(prefix)
    if _active.get("prefix") == prefix:
        return _modules()
    existing = existing_prefixes(dj.conn())
    missing = [m for m in MODULES if m not in existing.get(prefix, [])]
    if missing:
        complete = [p for p, mods in existing.items() if len(mods) == len(MODULES)]
        others = (f"prefixes with schemas here: {', '.join(complete)} (choose one with --prefix)" if complete
                  else "no neuralreg schemas exist here yet")
        what = "no schemas" if len(missing) == len(MODULES) else f"no schema {', '.join(names[m] for m in missing)}"
        raise SchemasMissing(f"prefix {prefix!r} has {what} on {settings.connection_summary()}; {others}")
    if _active and _active.get("prefix") != prefix:
        raise RuntimeError(f"this process is bound to prefix {_active['prefix']!r}; cannot switch to {prefix!r}")
    connection = dj.conn()
    modules = _modules()
    for module, db in names.items():
        modules[module].schema.activate(db, connection=connection, create_schema=False, create_tables=False)
    _active["prefix"] = prefix
    return modules
