"""Job administration over DataJoint 2's per-table job queues (`Table.jobs`).

    neuralreg status [--json]          rows per table, and the job queues of the computed ones
    neuralreg jobs [--json]            progress per table: pending, reserved, error, ignore, done
    neuralreg jobs errors [--trace] [--json]   failed keys with their messages (and tracebacks)
    neuralreg jobs held [--json]       reserved jobs: who holds each (host, pid, SLURM ids), preemptions
    neuralreg jobs retry [--table T] [--key NAME=VALUE ...]   clear errors: the next populate retries
    neuralreg jobs ignore --table T --key NAME=VALUE ...      never compute this key
    neuralreg jobs reclaim             give back jobs of dead workers

A worker killed with SIGKILL (or a machine that dies) leaves its job `reserved` for ever. Workers
stamp a heartbeat on the jobs they hold (populate/watchdog.py), and a reserved job is reclaimed
(its row deleted, so the next refresh queues it again as pending) when
  - its worker ran on this machine (same host name) and its process is gone, or
  - its heartbeat is older than the lease (common.LEASE, 5 min; the worker stamps it in the very
    UPDATE that reserves the job, so a worker's job has one from the start), or
  - it has no heartbeat (reserved outside the worker), its process is not known to live on this
    machine, and the database connection that reserved it
    no longer exists (checked against the server's process list: workers must use the same database
    account, which sees its own connections), or it has been reserved longer than the table's
    `reserve_timeout` (seconds; a class attribute of the table, default DEFAULT_TIMEOUT).
A live worker's job is never taken because its connection was closed: a server closes idle
connections (`wait_timeout`) of workers that train for hours. A hung worker ends itself through its
watchdog, which records the job as an error. The worker loop reclaims before every pass.
"""
from __future__ import annotations

import logging
import os
import platform
import re

log = logging.getLogger("neuralreg.jobs")

from populate.common import DEFAULT_TIMEOUT, LEASE, table_name


def queue(table):
    """The table's job queue (`~~table`) when it is in the database, else None. Reads only: DataJoint
    2.3 creates the queue on the first access to `table.jobs`, which read-only commands must not do."""
    from datajoint.jobs import Job
    jobs = Job(table())
    return jobs if jobs.is_declared else None


def progress(tables) -> list[dict]:
    """One dict per table: name, done (rows), remaining (keys not yet computed) and job counts (0 for a
    table whose job queue does not exist yet). Reads only."""
    rows = []
    for table in tables:
        remaining, total = table.progress(display=False)
        jobs = queue(table)
        p = jobs.progress() if jobs is not None else {}
        preempted = len(jobs & "status in ('pending', 'reserved')" & "error_message LIKE 'Preempted%'") \
            if jobs is not None else 0
        rows.append({"table": table_name(table), "done": total - remaining, "remaining": remaining,
                     **{k: p.get(k, 0) for k in ("pending", "reserved", "error", "ignore")}, "preempted": preempted})
    return rows


def progress_lines(prefix: str, rows: list[dict]) -> list[str]:
    """`neuralreg jobs`: the progress table, its legend and the work no job will do (unqueued)."""
    lines = [f"{'table':<36} {'done':>7} {'remaining':>9} {'pending':>8} {'reserved':>9} {'error':>6} {'ignore':>7} "
             f"{'preempted':>9}"]
    lines += [f"{r['table']:<36} {r['done']:>7} {r['remaining']:>9} {r['pending']:>8} {r['reserved']:>9} "
              f"{r['error']:>6} {r['ignore']:>7} {r['preempted']:>9}" for r in rows]
    return lines + [JOBS_LEGEND] + [line.strip() for line in unqueued(prefix, rows)]


def held(tables) -> list[dict]:
    """Every reserved job and who holds it: table, key, host, pid, user (the database account, then the
    scheduler's name for the worker, e.g. '[slurm job 1235 (array 1234_1)]': common.runner), since
    (reserved_time), heartbeat (its last stamp) and preemptions (times it was given back on a SIGTERM or
    SIGINT: populate/preempt.py). Reads only."""
    from populate.preempt import count
    found = []
    for table in tables:
        jobs = queue(table)
        if jobs is None:
            continue
        pk = jobs.primary_key
        for row in jobs.reserved.to_dicts(order_by="reserved_time"):
            found.append({"table": table_name(table), "key": {k: row[k] for k in pk}, "host": row.get("host"),
                          "pid": row.get("pid"), "user": row.get("user"), "since": row.get("reserved_time"),
                          "heartbeat": row.get("completed_time"), "preemptions": count(row.get("error_message"))})
    return found


def held_lines(rows: list[dict]) -> list[str]:
    """`neuralreg jobs held`: one line per reserved job, then the count."""
    lines = [f"{r['table']} {r['key']}: {r['user']} pid {r['pid']} on {r['host']} since {r['since']}, heartbeat "
             f"{r['heartbeat']}" + (f", preempted {r['preemptions']} time(s) before" if r["preemptions"] else "")
             for r in rows]
    return lines + [f"{len(rows)} job(s) reserved"]


def _tables(module, dj) -> list:
    """The master tables defined in a schema module, in definition order, each followed by its parts."""
    found = []
    for table in vars(module).values():
        if isinstance(table, type) and issubclass(table, dj.Table) and table.__module__ == module.__name__:
            found.append(table)
            found += [p for p in vars(table).values() if isinstance(p, type) and issubclass(p, dj.Part)]
    return found


def table_status(modules: dict) -> list[dict]:
    """Every table of the activated pipeline (`neuralreg status`), masters in definition order, each
    followed by its parts: {'table': 'module.Class' or 'module.Class.Part', 'rows': n, or None when
    the table is not in the database}; a computed table also has progress()'s 'done', 'remaining',
    'pending', 'reserved', 'error' and 'ignore' (None while it is not in the database). Reads only."""
    from neuralreg_schema import settings
    dj = settings.configure()
    rows = []
    for name, module in modules.items():
        for table in _tables(module, dj):
            label = table.__qualname__ if issubclass(table, dj.Part) else table.__name__
            declared = table().is_declared
            row = {"table": f"{name}.{label}", "rows": len(table()) if declared else None}
            if issubclass(table, (dj.Computed, dj.Imported)):
                counts = progress([table])[0] if declared else {}
                row.update({k: counts.get(k) for k in ("done", "remaining", "pending", "reserved", "error",
                                                       "ignore")})
            rows.append(row)
    return rows


def _select(tables, name: str | None):
    if name is None:
        return list(tables)
    chosen = [t for t in tables if name in (t.__name__, table_name(t))]
    if not chosen:
        raise ValueError(f"no computed table named {name!r}; tables: {', '.join(table_name(t) for t in tables)}")
    return chosen


_INT_TYPE = re.compile(r"(?P<size>tiny|small|medium|big)?int(eger)?(\s*\(\d+\))?(?P<unsigned>\s+unsigned)?$", re.I)
_INT_BITS = {"tiny": 8, "small": 16, "medium": 24, None: 32, "big": 64}
_FLOAT_TYPE = re.compile(r"(float|double|real|double precision|decimal|numeric)(\s*\(.*\))?(\s+unsigned)?$", re.I)
_STRING_TYPE = re.compile(r"(var)?char(acter)?( varying)?\s*\((?P<n>\d+)\)$|text$", re.I)
_ENUM_TYPE = re.compile(r"enum\s*\((?P<values>.*)\)$", re.I)
_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_value(attribute, text) -> object:
    """The value of a key attribute from its command-line text, parsed by the attribute's type (a
    DataJoint heading Attribute: its `type` is the column's SQL type on either backend). ValueError,
    naming the attribute and the type, when the text is not exactly one value of that type: a key
    value must not reach SQL as a string the server reads loosely (MySQL reads '1 OR 1=1' as 1)."""
    import datetime
    import uuid
    name, sql_type = attribute.name, str(attribute.type).strip()
    original = str(getattr(attribute, "original_type", "") or "")
    if not isinstance(text, str):
        text = str(text)

    def refuse(what: str) -> ValueError:
        return ValueError(f"--key {name}={text!r}: not {what} ({name} is {original or sql_type})")

    if getattr(attribute, "uuid", False) or original == "uuid" or sql_type.lower() == "uuid":
        try:
            return uuid.UUID(text)
        except ValueError:
            raise refuse("a UUID") from None
    if sql_type.lower() in ("tinyint(1)", "boolean", "bool"):
        if text.lower() in ("0", "false"):
            return False
        if text.lower() in ("1", "true"):
            return True
        raise refuse("a boolean (true, false, 1 or 0)")
    match = _INT_TYPE.fullmatch(sql_type)
    if match:
        if not _WHOLE.fullmatch(text):
            raise refuse("a whole number")
        value, bits = int(text), _INT_BITS[(match["size"] or "").lower() or None]
        low, high = (0, 2 ** bits - 1) if match["unsigned"] else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
        if not low <= value <= high:
            raise refuse(f"in {low}..{high}")
        return value
    if _FLOAT_TYPE.fullmatch(sql_type):
        if not _DECIMAL.fullmatch(text):
            raise refuse("a number")
        return float(text)
    match = _ENUM_TYPE.fullmatch(sql_type)
    if match:
        allowed = re.findall(r"'((?:[^']|'')*)'", match["values"])
        if text not in allowed:
            raise refuse(f"one of {', '.join(allowed)}")
        return text
    match = _STRING_TYPE.fullmatch(sql_type)
    if match:
        if match["n"] is not None and len(text) > int(match["n"]):
            raise refuse(f"a string of at most {match['n']} characters")
        if any(ord(c) < 32 for c in text):
            raise refuse("a printable string")
        return text
    if sql_type.lower() == "date":
        try:
            return datetime.date.fromisoformat(text)
        except ValueError:
            raise refuse("a date (YYYY-MM-DD)") from None
    if sql_type.lower().startswith(("datetime", "timestamp")):
        try:
            return datetime.datetime.fromisoformat(text)
        except ValueError:
            raise refuse("a date and time (YYYY-MM-DD HH:MM:SS)") from None
    raise ValueError(f"--key {name}: its type {original or sql_type} cannot be given on the command line")


def parse_key(table, key: dict) -> dict:
    """`key` (names to command-line texts) with each value parsed by its attribute's type in the
    table's job key (parse_value); the names must already be attributes of that key."""
    heading = table.jobs.heading
    return {k: parse_value(heading.attributes[k], v) for k, v in key.items()}


def _keyed(tables, name: str | None, key: dict | None) -> list:
    """The selected tables, each with `key` checked: every name must be an attribute of the table's
    job key (a restriction by an unknown name would match every job, and names reach SQL). Without a
    table name, the tables whose job key has all the names; ValueError when there is none."""
    chosen = _select(tables, name)
    if not key:
        return chosen
    names = set(key)
    fitting = [t for t in chosen if names <= set(t.jobs.primary_key)]
    if not fitting:
        where = table_name(chosen[0]) if name else "any table"
        known = sorted(set(chosen[0].jobs.primary_key)) if name else sorted({a for t in chosen for a in t.jobs.primary_key})
        raise ValueError(f"--key names {sorted(names - set(known)) or sorted(names)} are not attributes of the job "
                         f"key of {where}; known: {', '.join(known)}")
    return fitting


def _typed(tables, name: str | None, key: dict | None) -> list[tuple]:
    """(table, key parsed by the table's attribute types) for each table _keyed selects; every value is
    parsed (ValueError naming the attribute) before any table is touched."""
    chosen = _keyed(tables, name, key)
    return [(table, parse_key(table, key) if key else None) for table in chosen]


def errors(tables, name: str | None = None) -> list[dict]:
    """Every job in error: table, key, message, traceback, host, pid, when. Reads only."""
    found = []
    for table in _select(tables, name):
        jobs = queue(table)
        if jobs is None:                        # no worker has run on it yet: no job in error
            continue
        pk = jobs.primary_key
        for row in jobs.errors.to_dicts():
            found.append({"table": table_name(table), "key": {k: row[k] for k in pk},
                          "message": row.get("error_message", ""), "stack": row.get("error_stack", ""),
                          "host": row.get("host"), "pid": row.get("pid"),
                          "when": row.get("completed_time") or row.get("reserved_time")})
    return found


def retry(tables, name: str | None = None, key: dict | None = None) -> int:
    """Clear errors (all, of one table, or of one key); returns how many."""
    cleared = 0
    for table, typed in _typed(tables, name, key):
        rel = table.jobs.errors & typed if typed else table.jobs.errors
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
    for table, typed in _typed(tables, name, key):
        table.jobs.refresh()
        rel = table.jobs & "status = 'pending'"
        for job in (rel & typed if typed else rel).keys():
            table.jobs.update1({**job, "priority": int(priority)})
            changed += 1
    return changed


def ignore(tables, name: str, key: dict) -> None:
    """Mark one key of a table so that no worker computes it."""
    ((table, typed),) = _typed(tables, name, key)
    missing = set(table.jobs.primary_key) - set(typed)
    if missing:
        raise ValueError(f"{table_name(table)}: the key needs {sorted(missing)}")
    table.jobs.ignore({k: typed[k] for k in table.jobs.primary_key})


def declare(tables, attempts: int = 5) -> None:
    """Create the tables' job queues now, before any work. Workers that start together race to declare
    a queue: on PostgreSQL DataJoint 2.3.5 issues its enum type, table and indexes as separate
    statements, so the slower worker fails with '... already exists' (on MySQL the indexes are part of
    CREATE TABLE and nothing fails). Whoever loses finds the queue declared by the winner on its next try."""
    import random
    import time
    for table in tables:
        for attempt in range(attempts):
            try:
                if not table.jobs.is_declared:
                    table.jobs.declare()
                break
            except Exception as exc:              # noqa: BLE001 - only the race is retried
                if "already exists" not in str(exc) or attempt == attempts - 1:
                    raise
                log.info("%s: its job queue was being declared by another worker (%s); trying again",
                         table_name(table), str(exc).splitlines()[0])
                time.sleep(0.2 + random.random())


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (workers that share a host name must share a
    process namespace: docker compose gives every container its own host name unless told otherwise)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# the ids of the server's live connections, as DataJoint records them in `connection_id`
# (MySQL/MariaDB: CONNECTION_ID(); PostgreSQL: pg_backend_pid())
LIVE_CONNECTIONS_SQL = {
    "mysql": "SELECT ID FROM information_schema.PROCESSLIST",     # this account's (all with PROCESS)
    "postgresql": "SELECT pid FROM pg_stat_activity",             # every backend of the cluster
}


def live_connections(connection) -> set[int]:
    """Ids of the connections the server shows to this account (MySQL: all of them with PROCESS
    privilege; PostgreSQL: every session, whatever its role)."""
    sql = LIVE_CONNECTIONS_SQL[connection.adapter.backend]
    return {int(row[0]) for row in connection.query(sql).fetchall()}


def reclaim(tables, timeouts: dict | None = None, lease: float | None = None) -> dict[str, int]:
    """Give back (delete, so the next refresh queues them again) the reserved jobs whose worker is
    gone. Returns {table: number reclaimed} for tables with any.

    A job with a heartbeat (populate/watchdog.py: `completed_time` stamped while reserved) is
    abandoned when its last heartbeat is older than `lease` seconds (default common.LEASE): a dead
    connection alone does not count, since a server closes idle connections of live workers. A job
    without a heartbeat (reserved outside our worker, e.g. `Table.populate(reserve_jobs=True)` in a
    notebook) is abandoned when its connection is gone or it has been reserved longer than the
    table's `reserve_timeout` (`timeouts` overrides per table class name)."""
    lease = LEASE if lease is None else float(lease)
    reclaimed = {}
    for table in tables:
        reserved = table.jobs.reserved
        if not len(reserved):
            continue
        adapter = table.connection.adapter
        timeout = (timeouts or {}).get(table.__name__, getattr(table, "reserve_timeout", DEFAULT_TIMEOUT))
        pk = table.jobs.primary_key
        stale_beat = reserved & "completed_time IS NOT NULL" & \
            f"completed_time < CURRENT_TIMESTAMP(3) - {adapter.interval_expr(max(1, int(lease)), 'second')}"
        expired = reserved & "completed_time IS NULL" & \
            f"reserved_time < CURRENT_TIMESTAMP(3) - {adapter.interval_expr(max(1, int(timeout)), 'second')}"
        gone = {tuple(k[a] for a in pk) for k in stale_beat.keys()} | {tuple(k[a] for a in pk) for k in expired.keys()}
        live = None
        n = 0
        for row in reserved.to_dicts():
            key = {k: row[k] for k in pk}
            here = row.get("host") == platform.node() and row.get("pid")
            if here and not pid_alive(int(row["pid"])):
                why = f"its process {row['pid']} on this host is gone"
            elif tuple(key.values()) in gone:
                why = ("no heartbeat for longer than the lease" if row.get("completed_time") is not None
                       else f"reserved longer than {timeout} s")
            elif here:
                continue                # its process lives on this host: a lost connection is not a dead job
            elif row.get("completed_time") is None and row.get("connection_id"):
                live = live_connections(table.connection) if live is None else live
                if int(row["connection_id"]) in live:
                    continue
                why = "no heartbeat and its connection is gone"
            else:
                continue
            (table.jobs & key & "status = 'reserved'").delete_quick()
            log.warning("%s %s: reclaimed a job reserved by %s (pid %s on %s): %s", table_name(table), key,
                        row.get("user"), row.get("pid"), row.get("host"), why)
            n += 1
        if n:
            reclaimed[table_name(table)] = n
    return reclaimed


# what the columns of `status` and `jobs` mean: in their --help and under their tables
COLUMNS = ("done: rows computed. remaining: keys whose inputs exist and that are not computed yet (all of them "
           "are computed by `neuralreg populate`). Jobs (DataJoint's queue of each table): pending = queued, "
           "waiting for a worker; reserved = a worker is computing it (`neuralreg jobs held`: which worker, "
           "its SLURM ids); error = failed (`neuralreg jobs errors`, "
           "`neuralreg jobs retry`); ignore = skipped for good; preempted = pending or reserved jobs given back "
           "on a SIGTERM/SIGINT at least once (they resume from their checkpoint by themselves). A remaining key without a job is not queued "
           "yet: the next `neuralreg populate` (or worker pass) queues it.")
STATUS_LEGEND = ("  rows: rows in the table; a computed table's 'n/m done': n rows of the m keys whose inputs exist; "
                 "jobs: pending = queued for a worker, reserved = being computed, error = failed "
                 "(`neuralreg jobs --help` says more)")
JOBS_LEGEND = ("done: rows computed; remaining: keys whose inputs exist, not computed yet; pending: queued for a "
               "worker; reserved: being computed (`jobs held`: by whom); error: failed (`jobs errors`); ignore: "
               "skipped for good; preempted: pending or reserved, given back on a SIGTERM before")


def unqueued(prefix: str, rows: list[dict]) -> list[str]:
    """One line per table with work that exists but that no job will do: keys whose inputs exist and
    that no job holds (remaining - pending - reserved - error - ignore), with the command that queues
    and computes them."""
    lines = []
    counts = {r["table"]: r.get("rows") for r in rows}
    trained = next((r for r in rows if r["table"] == "classifier.RegularizedClassifier"), None)
    if trained and trained.get("remaining") is not None and counts.get("classifier.ClassifierPlan"):
        blocked = counts["classifier.ClassifierPlan"] - trained["done"] - trained["remaining"]
        if blocked > 0:
            lines.append(f"  classifier.RegularizedClassifier: {blocked} planned classifier(s) wait for their "
                         "similarity targets (AveragedSimilarity): `neuralreg --prefix "
                         f"{prefix} populate` computes the targets first, then trains them")
    for r in rows:
        if r.get("remaining") is None:
            continue
        held = sum(r.get(k) or 0 for k in ("pending", "reserved", "error", "ignore"))
        waiting = r["remaining"] - held
        if waiting > 0:
            name = r["table"].split(".")[-1]
            lines.append(f"  {r['table']}: {waiting} key(s) can be computed but are not queued: "
                         f"`neuralreg --prefix {prefix} populate` queues and computes them "
                         f"(`--tables {name}` for this table only)")
    return lines
