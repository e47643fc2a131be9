"""Job administration over DataJoint 2's per-table job queues (`Table.jobs`).

    neuralreg jobs                     progress per table: pending, reserved, error, ignore, done
    neuralreg jobs errors [--trace]    failed keys with their messages (and tracebacks)
    neuralreg jobs retry [--table T] [--key NAME=VALUE ...]   clear errors: the next populate retries
    neuralreg jobs ignore --table T --key NAME=VALUE ...      never compute this key
    neuralreg jobs reclaim             give back jobs of dead workers

A worker killed with SIGKILL (or a machine that dies) leaves its job `reserved` for ever. A
reserved job is reclaimed (its row deleted, so the next refresh queues it again as pending) when
  - the database connection that reserved it no longer exists (checked against the server's
    process list: workers must use the same database account, which sees its own connections), or
  - it has been reserved longer than the table's `reserve_timeout` (seconds; a class attribute of
    the table, default DEFAULT_TIMEOUT), which must exceed that table's longest job.
The worker loop reclaims before every pass.
"""
from __future__ import annotations

import logging

log = logging.getLogger("neuralreg.jobs")

DEFAULT_TIMEOUT = 24 * 3600          # s; tables set `reserve_timeout` to what their longest job needs


def table_name(table) -> str:
    return f"{table.__module__.rsplit('.', 1)[-1]}.{table.__name__}"


def progress(tables) -> list[dict]:
    """One dict per table: name, done (rows), remaining (keys not yet computed) and job counts."""
    rows = []
    for table in tables:
        remaining, total = table.progress(display=False)
        p = table.jobs.progress()
        rows.append({"table": table_name(table), "done": total - remaining, "remaining": remaining,
                     **{k: p.get(k, 0) for k in ("pending", "reserved", "error", "ignore")}})
    return rows


def _select(tables, name: str | None):
    if name is None:
        return list(tables)
    chosen = [t for t in tables if name in (t.__name__, table_name(t))]
    if not chosen:
        raise ValueError(f"no computed table named {name!r}; tables: {', '.join(table_name(t) for t in tables)}")
    return chosen


def errors(tables, name: str | None = None) -> list[dict]:
    """Every job in error: table, key, message, traceback, host, pid, when."""
    found = []
    for table in _select(tables, name):
        pk = table.jobs.primary_key
        for row in table.jobs.errors.to_dicts():
            found.append({"table": table_name(table), "key": {k: row[k] for k in pk},
                          "message": row.get("error_message", ""), "stack": row.get("error_stack", ""),
                          "host": row.get("host"), "pid": row.get("pid"),
                          "when": row.get("completed_time") or row.get("reserved_time")})
    return found


def retry(tables, name: str | None = None, key: dict | None = None) -> int:
    """Clear errors (all, of one table, or of one key); returns how many."""
    cleared = 0
    for table in _select(tables, name):
        rel = table.jobs.errors & key if key else table.jobs.errors
        n = len(rel)
        if n:
            rel.delete()
        cleared += n
    return cleared


def prioritize(tables, name: str, priority: int, key: dict | None = None) -> int:
    """Set the priority of the table's pending jobs (all, or those matching `key`): lower runs first
    (DataJoint orders pending jobs by priority, then scheduled time; `worker --priority P` takes only
    jobs with priority <= P). Every job not yet in the queue is added first, at the default priority:
    a worker with --priority also queues keys it finds new at its own priority, so refreshing here
    keeps them out of its way. Returns how many changed."""
    if not -128 <= int(priority) <= 127:
        raise ValueError(f"priority must be in -128..127 (lower runs first), got {priority}")
    changed = 0
    for table in _select(tables, name):
        table.jobs.refresh()
        rel = table.jobs & "status = 'pending'"
        for job in (rel & key if key else rel).keys():
            table.jobs.update1({**job, "priority": int(priority)})
            changed += 1
    return changed


def ignore(tables, name: str, key: dict) -> None:
    """Mark one key of a table so that no worker computes it."""
    (table,) = _select(tables, name)
    missing = set(table.jobs.primary_key) - set(key)
    if missing:
        raise ValueError(f"{table_name(table)}: the key needs {sorted(missing)}")
    table.jobs.ignore({k: key[k] for k in table.jobs.primary_key})


def live_connections(connection) -> set[int]:
    """Ids of the connections the server shows to this account (all of them with PROCESS privilege)."""
    return {int(row[0]) for row in connection.query("SELECT ID FROM information_schema.PROCESSLIST").fetchall()}


def reclaim(tables, timeouts: dict | None = None) -> dict[str, int]:
    """Delete reserved jobs held by dead connections or older than their table's timeout.
    Returns {table: number reclaimed} for tables with any."""
    reclaimed = {}
    for table in tables:
        reserved = table.jobs.reserved
        if not len(reserved):
            continue
        live = live_connections(table.connection)
        timeout = (timeouts or {}).get(table.__name__, getattr(table, "reserve_timeout", DEFAULT_TIMEOUT))
        pk = table.jobs.primary_key
        expired = {tuple(k[a] for a in pk)
                   for k in (reserved & f"reserved_time < NOW(3) - INTERVAL {int(timeout)} SECOND").keys()}
        n = 0
        for row in reserved.to_dicts():
            key = {k: row[k] for k in pk}
            dead = row.get("connection_id") is not None and int(row["connection_id"]) not in live
            if dead or tuple(key.values()) in expired:
                (table.jobs & key & "status = 'reserved'").delete_quick()
                log.warning("%s %s: reclaimed a job reserved by %s (pid %s on %s): %s", table_name(table), key,
                            row.get("user"), row.get("pid"), row.get("host"),
                            "its connection is gone" if dead else f"reserved longer than {timeout} s")
                n += 1
        if n:
            reclaimed[table_name(table)] = n
    return reclaimed
