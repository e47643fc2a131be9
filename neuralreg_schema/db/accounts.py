"""Accounts and grants, backend-aware: `accounts(admin)` is MySQLAccounts (statements valid on MySQL 8.4 and
MariaDB 10.11+: CREATE USER IF NOT EXISTS ... IDENTIFIED BY, GRANT on the `neuralreg\\_%` schemas) or
PostgresAccounts (CREATE ROLE ... LOGIN PASSWORD, the pipeline's own database, schema and default privileges).
Administrative access (`admin_connection`) comes from DJ_ADMIN_USER / DJ_ADMIN_PASS, else the compose `.env`'s
root password (local targets), else root (postgres) without password over TCP, else the server's unix socket as
the current OS user."""
from __future__ import annotations

import getpass
import os
import re
import secrets as _secrets
import shutil
import subprocess
from pathlib import Path

from .. import settings
from .connection import (APP_USER, MYSQL_HOSTS, SCHEMA_PATTERN, SERVER_SETTINGS, WORKER_USER, DatabaseError, Target,
                         app_credentials, backend_of, can_login, configured_target, connect, psycopg2_driver,
                         query)
from .servers import local_dir, update_env_file

def candidate_sockets(backend: str = "mysql") -> list[str]:
    """Unix sockets an administrative login may use: our private server's, $DJ_ADMIN_SOCKET, and the
    one the installed server's own option files name (`my_print_defaults`). PostgreSQL: the folders
    that hold its sockets (Debian's /var/run/postgresql, /tmp)."""
    if backend == "postgresql":
        paths = [p for p in os.environ.get("DJ_ADMIN_SOCKET", "").split(os.pathsep) if p]
        return [p for p in dict.fromkeys(paths + ["/var/run/postgresql", "/tmp"]) if Path(p).is_dir()]
    paths = [str(local_dir() / "mysqld.sock")]
    paths += [p for p in os.environ.get("DJ_ADMIN_SOCKET", "").split(os.pathsep) if p]
    if shutil.which("my_print_defaults"):
        run = subprocess.run(["my_print_defaults", "mysqld", "client", "client-server"],
                             capture_output=True, text=True)
        paths += [line.split("=", 1)[1] for line in run.stdout.splitlines() if line.startswith("--socket=")]
    return [p for p in dict.fromkeys(paths) if Path(p).exists()]


def _env_admin_password(backend: str) -> str | None:
    """The compose `.env`'s administrative password (the database container's root / postgres)."""
    path = settings.project_root() / ".env"
    if not path.is_file():
        return None
    settings.tighten(path, 0o600)
    values = dict(line.split("=", 1) for line in path.read_text().splitlines()
                  if "=" in line and not line.lstrip().startswith("#"))
    name = "POSTGRES_PASSWORD" if backend == "postgresql" else "MYSQL_ROOT_PASSWORD"
    return values.get(name, "").strip() or None


def admin_connection(target: Target):
    """A connection with the right to create accounts, or None (tried: DJ_ADMIN_USER/DJ_ADMIN_PASS, the
    compose .env's root password for a local target, root (postgres) without password, sockets). On
    PostgreSQL it is a connection to the maintenance database `postgres`."""
    superuser = "postgres" if target.postgres else "root"
    attempts = []
    if os.environ.get("DJ_ADMIN_USER"):
        attempts.append(dict(user=os.environ["DJ_ADMIN_USER"], password=os.environ.get("DJ_ADMIN_PASS", "")))
    if target.is_local and _env_admin_password(target.backend):
        attempts.append(dict(user=superuser, password=_env_admin_password(target.backend)))
    attempts.append(dict(user=superuser, password=""))
    if target.is_local:
        for path in candidate_sockets(target.backend):
            attempts += [dict(user=getpass.getuser(), unix_socket=path), dict(user=superuser, unix_socket=path)]
    for attempt in attempts:
        try:
            connection = connect(target, **attempt, **({"database": "postgres"} if target.postgres else {}))
        except Exception:
            continue
        # a socket may belong to another server on this machine: accept it only if it is the target
        if attempt.get("unix_socket") and accounts(connection).port() != target.port:
            connection.close()
            continue
        return connection
    return None



# What a worker account may do, on the schemas of one study (one prefix: <prefix>_experiment, ...)
# and nothing else; the same on both backends (docs/workers.md has the table):
#   every table of the study's schemas       SELECT
#   computed tables and their parts          INSERT (the results it computes)
#   job queues (~~table)                     SELECT, INSERT, UPDATE, DELETE (reserve, complete, reclaim)
# No CREATE (no new database, schema or table), no DROP or ALTER, no UPDATE or DELETE of any
# manual, lookup or computed row, nothing on another prefix's schemas. `worker_user` declares every
# job queue first (as the application account), since the worker cannot.
WORKER_SCHEMA_PRIVILEGES = ("SELECT",)
WORKER_RESULT_PRIVILEGES = ("INSERT",)
WORKER_QUEUE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
PG_KEY_VISIBILITY = ("REFERENCES",)      # PostgreSQL only: see PostgresAccounts.ensure_worker_user


def _table_role(name: str) -> str:
    """'queue' (a job table, ~~name), 'result' (a computed or imported table or one of its parts:
    DataJoint names them __name, _name, __name__part), or 'input' (manual, lookup, their parts, and
    DataJoint's hidden ~lineage)."""
    if name.startswith("~~"):
        return "queue"
    if name.startswith("_"):
        return "result"
    return "input"


def _mysql_db_pattern(schema: str) -> str:
    """A schema name as a database-level GRANT pattern: `_` and `%` escaped (literal)."""
    return schema.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def _quote_mysql(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


_PG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class MySQLAccounts:
    """Accounts and grants on MySQL 8.4 and MariaDB 10.11+ (one statement set valid on both)."""

    backend = "mysql"

    def __init__(self, admin):
        self.admin = admin

    def _grant(self, privileges: str, user: str, host: str) -> None:
        # PyMySQL formats with %: the pattern's own % doubled
        query(self.admin, f"GRANT {privileges} ON `{SCHEMA_PATTERN.replace('%', '%%')}`.* TO %s@%s", (user, host))

    def _ensure(self, user: str, password: str | None) -> None:
        """Create the account (every host of MYSQL_HOSTS) with `password`, or set it; None keeps the
        existing one (a host that is missing is created only with a password)."""
        for host in MYSQL_HOSTS:
            if password is None:
                continue
            query(self.admin, "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password))
            query(self.admin, "ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))

    def ensure_app_user(self, user: str, password: str) -> None:
        self._ensure(user, password)
        for host in MYSQL_HOSTS:
            self._grant("ALL PRIVILEGES", user, host)

    def study_tables(self, schemas: list[str]) -> dict[str, list[str]]:
        """{schema: its table names} for the schemas that exist."""
        found: dict[str, list[str]] = {}
        for schema, table in query(self.admin, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
                                               f"WHERE TABLE_SCHEMA IN ({', '.join(['%s'] * len(schemas))})",
                                   tuple(schemas)):
            found.setdefault(schema, []).append(table)
        return found

    def _foreign_grants(self, user: str, host: str, schemas: list[str]) -> bool:
        """Whether the account holds any right beyond the study's schemas (an earlier version's grant on
        `neuralreg\\_%`, another study's, a server-wide one)."""
        try:
            lines = [row[0] for row in query(self.admin, "SHOW GRANTS FOR %s@%s", (user, host))]
        except Exception:          # noqa: BLE001 - no such user@host
            return False
        allowed = set(schemas)
        for line in lines:
            if re.match(r"GRANT USAGE ON \*\.\* TO", line):
                continue
            match = re.search(r" ON `((?:[^`]|``)*)`\.", line)
            if not match or match.group(1).replace("``", "`").replace("\\_", "_").replace("\\%", "%") not in allowed:
                return True
        return False

    def ensure_worker_user(self, user: str, password: str | None, app_user: str | None = None, *,
                           schemas: list[str], tables: dict[str, list[str]]) -> None:
        self._ensure(user, password)
        for host in MYSQL_HOSTS:
            if self._foreign_grants(user, host, schemas):
                query(self.admin, "REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s", (user, host))
            for schema in schemas:
                query(self.admin, f"GRANT {', '.join(WORKER_SCHEMA_PRIVILEGES)} ON "
                                  f"{_quote_mysql(_mysql_db_pattern(schema)).replace('%', '%%')}.* TO %s@%s",
                      (user, host))
            for schema, names in tables.items():
                for name in names:
                    rights = {"queue": WORKER_QUEUE_PRIVILEGES, "result": WORKER_RESULT_PRIVILEGES}.get(_table_role(name))
                    if rights:           # table-level grants take names literally; ours hold no '%'
                        query(self.admin, f"GRANT {', '.join(rights)} ON {_quote_mysql(schema)}.{_quote_mysql(name)} "
                                          "TO %s@%s", (user, host))

    def drop_user(self, user: str) -> None:
        for host in MYSQL_HOSTS:
            query(self.admin, "DROP USER IF EXISTS %s@%s", (user, host))

    def user_exists(self, user: str) -> bool:
        return bool(query(self.admin, "SELECT 1 FROM mysql.user WHERE User = %s", (user,)))

    def is_privileged(self, user: str) -> bool:
        """Whether any host of the account holds a server-wide right (on *.*)."""
        rows = query(self.admin, "SELECT GRANTEE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE LIKE %s "
                                 "AND PRIVILEGE_TYPE <> 'USAGE'", (f"'{user}'@%",))
        return any(grantee.split("@", 1)[0] == f"'{user}'" for (grantee,) in rows)

    def port(self) -> int:
        return int(query(self.admin, "SELECT @@port")[0][0])

    def apply_server_settings(self) -> list[str]:
        """Raise the server's limits to SERVER_SETTINGS where it allows; return what could not be set."""
        failed = []
        for name, value in SERVER_SETTINGS.items():
            try:
                current = int(query(self.admin, f"SELECT @@GLOBAL.{name}")[0][0])
                if current < value:
                    query(self.admin, f"SET GLOBAL {name} = {int(value)}")
            except Exception as exc:
                failed.append(f"{name}: {exc}")
        return failed

    @staticmethod
    def describe_worker_grants(prefix: str) -> str:
        return (f"SELECT on the schemas {prefix}_*, INSERT on their computed tables, SELECT, INSERT, UPDATE, "
                "DELETE on their job queues; nothing else")


class PostgresAccounts:
    """Roles and grants on PostgreSQL 15+. The pipeline's schemas live in one database (PG_DATABASE or
    `database.name`): the app role may CONNECT and CREATE schemas there, and owns what it creates. A
    worker role may use (USAGE, CREATE: its job tables) every schema the app role creates and read and
    write (no DROP, ALTER, TRUNCATE) its tables, through default privileges, plus the same on what
    exists already; the app role may read and write the job tables the worker creates. Default
    privileges are per database, so the statements run in the pipeline's database."""

    backend = "postgresql"

    def __init__(self, admin, database: str | None = None):
        self.admin = admin
        self.database = database or settings.PG_DATABASE
        self._in_db = None

    @staticmethod
    def ident(name: str) -> str:
        if not _PG_NAME.fullmatch(name or ""):
            raise ValueError(f"{name!r} is not a plain PostgreSQL name (letters, digits, '_')")
        return f'"{name}"'

    def _db(self):
        """An administrative connection to the pipeline's database (the admin's own when it is one)."""
        if self.admin.info.dbname == self.database:
            return self.admin
        if self._in_db is None:
            info = self.admin.info
            psycopg2 = psycopg2_driver()
            self._in_db = psycopg2.connect(host=info.host, port=info.port, user=info.user,
                                           password=info.password or None, dbname=self.database, connect_timeout=5)
            self._in_db.autocommit = True
        return self._in_db

    def close(self) -> None:
        if self._in_db is not None:
            self._in_db.close()
            self._in_db = None

    def _ensure_role(self, user: str, password: str | None) -> None:
        """Create the login role with `password`, or set it; None keeps the existing role's password."""
        if password is None and self.user_exists(user):
            query(self.admin, f"ALTER ROLE {self.ident(user)} WITH LOGIN")
            return
        verb = "ALTER" if self.user_exists(user) else "CREATE"
        query(self.admin, f"{verb} ROLE {self.ident(user)} WITH LOGIN PASSWORD %s", (password,))

    def ensure_database(self) -> None:
        if not query(self.admin, "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)):
            query(self.admin, f"CREATE DATABASE {self.ident(self.database)} ENCODING 'UTF8'")

    def ensure_app_user(self, user: str, password: str) -> None:
        self._ensure_role(user, password)
        self.ensure_database()
        query(self.admin, f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {self.ident(self.database)} "
                           f"TO {self.ident(user)}")

    def study_tables(self, schemas: list[str]) -> dict[str, list[str]]:
        """{schema: its table names} for the schemas that exist (in the pipeline's database)."""
        found: dict[str, list[str]] = {}
        for schema, table in query(self._db(), "SELECT schemaname, tablename FROM pg_tables "
                                               "WHERE schemaname = ANY(%s)", (list(schemas),)):
            found.setdefault(schema, []).append(table)
        return found

    @staticmethod
    def _quoted(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def ensure_worker_user(self, user: str, password: str | None, app_user: str | None = None, *,
                           schemas: list[str], tables: dict[str, list[str]]) -> None:
        app_user = app_user or APP_USER
        worker, app = self.ident(user), self.ident(app_user)
        self._ensure_role(user, password)
        self.ensure_database()
        query(self.admin, f"REVOKE ALL ON DATABASE {self.ident(self.database)} FROM {worker}")
        query(self.admin, f"GRANT CONNECT ON DATABASE {self.ident(self.database)} TO {worker}")
        db = self._db()
        # what earlier versions granted: every schema of the app role, and its future ones
        for sql in (f"ALTER DEFAULT PRIVILEGES FOR ROLE {app} REVOKE ALL ON SCHEMAS FROM {worker}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {app} REVOKE ALL ON TABLES FROM {worker}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {app} REVOKE ALL ON SEQUENCES FROM {worker}"):
            query(db, sql)
        granted = query(db, "SELECT DISTINCT table_schema FROM information_schema.role_table_grants "
                            "WHERE grantee = %s", (user,))
        usage = query(db, "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(%s, oid, 'USAGE') "
                          "AND nspname NOT IN ('pg_catalog', 'information_schema', 'public') "
                          "AND nspname NOT LIKE 'pg\\_%%'", (user,))
        for (schema,) in {*granted, *usage} - {(s,) for s in schemas}:
            quoted = self._quoted(schema)
            query(db, f"REVOKE ALL ON ALL TABLES IN SCHEMA {quoted} FROM {worker}")
            query(db, f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {quoted} FROM {worker}")
            query(db, f"REVOKE ALL ON SCHEMA {quoted} FROM {worker}")
        for schema in schemas:
            quoted = self._quoted(schema)
            query(db, f"REVOKE ALL ON ALL TABLES IN SCHEMA {quoted} FROM {worker}")
            query(db, f"REVOKE CREATE ON SCHEMA {quoted} FROM {worker}")
            query(db, f"GRANT USAGE ON SCHEMA {quoted} TO {worker}")
            # REFERENCES as well: PostgreSQL's information_schema shows a table's constraints (DataJoint reads
            # its primary key there) only to a role with a right other than SELECT on it; without CREATE
            # on any schema the role cannot make a table that would reference anything
            query(db, f"GRANT {', '.join(WORKER_SCHEMA_PRIVILEGES + PG_KEY_VISIBILITY)} ON ALL TABLES IN SCHEMA "
                      f"{quoted} TO {worker}")
            for name in tables.get(schema, []):
                rights = {"queue": WORKER_QUEUE_PRIVILEGES, "result": WORKER_RESULT_PRIVILEGES}.get(_table_role(name))
                if rights:
                    query(db, f"GRANT {', '.join(rights)} ON TABLE {quoted}.{self._quoted(name)} TO {worker}")

    def drop_user(self, user: str) -> None:
        if not self.user_exists(user):
            return
        if query(self.admin, "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)):
            query(self._db(), f"DROP OWNED BY {self.ident(user)}")   # its objects, grants, default privileges
        query(self.admin, f"DROP ROLE IF EXISTS {self.ident(user)}")

    def user_exists(self, user: str) -> bool:
        return bool(query(self.admin, "SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)))

    def is_privileged(self, user: str) -> bool:
        """Whether the role is a superuser or may create roles or databases, or bypass row security."""
        return bool(query(self.admin, "SELECT 1 FROM pg_roles WHERE rolname = %s AND (rolsuper OR rolcreaterole "
                                      "OR rolcreatedb OR rolbypassrls OR rolreplication)", (user,)))

    def port(self) -> int:
        return int(query(self.admin, "SHOW port")[0][0])

    def apply_server_settings(self) -> list[str]:
        return []           # no packet limit; idle sessions are kept (idle_session_timeout 0 by default)

    def describe_worker_grants(self, prefix: str) -> str:
        return (f"in database {self.database!r}: USAGE, SELECT and REFERENCES on the schemas {prefix}_*, INSERT on their computed "
                "tables, SELECT, INSERT, UPDATE, DELETE on their job queues; nothing else")


def accounts(admin, database: str | None = None):
    """The backend-aware account helper for an administrative connection."""
    if backend_of(admin) == "postgresql":
        return PostgresAccounts(admin, database or configured_target().database)
    return MySQLAccounts(admin)


def ensure_app_user(admin, user: str, password: str) -> None:
    """Create (or reset the password of) the application account, with all rights on the pipeline's
    schemas (MySQL family: SCHEMA_PATTERN; PostgreSQL: schemas it creates in the pipeline's database)."""
    helper = accounts(admin)
    try:
        helper.ensure_app_user(user, password)
    finally:
        getattr(helper, "close", lambda: None)()


def ensure_worker_user(admin, user: str, password: str | None, app_user: str | None = None, *,
                       prefix: str = settings.DEFAULT_PREFIX) -> None:
    """Create (or reset; `password` None: keep its password) a least-privilege worker account for the
    study `prefix` (WORKER_*_PRIVILEGES): it reads the study's tables, inserts results and works its
    job queues, and can do nothing else; rights it holds elsewhere (an earlier version's grants on
    every neuralreg schema, another study's) are revoked. The study's schemas and job queues must
    exist (`worker_user` makes them). All workers of one study share one account (jobs.reclaim sees
    only the connections of its own account on MySQL)."""
    from ..pipeline import schema_names
    app_user = app_user or app_credentials()[0] or APP_USER
    if not user or user == app_user:
        raise ValueError(f"the worker account needs its own name, not {user!r}")
    schemas = list(schema_names(prefix).values())
    helper = accounts(admin)
    try:
        tables = helper.study_tables(schemas)
        missing = [name for name in schemas if name not in tables]
        queues = [t for names in tables.values() for t in names if _table_role(t) == "queue"]
        if missing or not queues:
            raise DatabaseError(f"the study {prefix!r} has no schemas {', '.join(missing)} or no job queues yet: "
                                f"`neuralreg --prefix {prefix} db worker-user` creates them first")
        helper.ensure_worker_user(user, password, app_user, schemas=schemas, tables=tables)
    finally:
        getattr(helper, "close", lambda: None)()


def declare_study(prefix: str) -> None:
    """As the application account: the study's schemas and tables (pipeline.activate) and the job
    queue of every computed table (a worker account may not create them)."""
    from datajoint.jobs import Job
    from .. import pipeline
    modules = pipeline.activate(prefix)
    for module in modules.values():
        for attr in getattr(module, "POPULATE_ORDER", ()):
            queue = Job(getattr(module, attr)())
            if not queue.is_declared:
                queue.declare()


def drop_account(admin, user: str) -> None:
    """Remove an account (tests; on PostgreSQL with what it owns in the pipeline's database)."""
    helper = accounts(admin)
    try:
        helper.drop_user(user)
    finally:
        getattr(helper, "close", lambda: None)()


# accounts `db worker-user` never touches, --force or not: the servers' own and administrative ones
RESERVED_ACCOUNTS = {"root", "postgres", "mysql", "mariadb.sys", "mysql.sys", "mysql.session",
                     "mysql.infoschema", "debian-sys-maint", "public", "admin"}
_WORKER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


def worker_user(name: str = WORKER_USER, say=print, *, force: bool = False, rotate: bool = False,
                prefix: str = settings.DEFAULT_PREFIX) -> Path:
    """Create the worker account `name` of the study `prefix` (ensure_worker_user: its schemas only, no
    DELETE or UPDATE of their rows but the job queues') with a generated password, stored in .secrets/ (0600) and, for
    docker compose on this machine, in `.env` (NEURALREG_WORKER_USER / NEURALREG_WORKER_PASSWORD);
    returns the password file. Needs the administrative access `up` uses.

    Idempotent: when the account exists and the password in .secrets/ logs in (this project made it),
    the grants are applied again and the password is kept, unless `rotate` (then the running workers
    need the new one). An existing account whose password this project does not hold was not made here:
    it is refused (its password would be reset under whoever uses it) unless `force`. Administrative
    accounts (RESERVED_ACCOUNTS, the application account, any account with server-wide rights) are
    refused always."""
    if (name or "").lower() in RESERVED_ACCOUNTS or (name or "").lower().startswith(("pg_", "mysql.")):
        raise ValueError(f"{name!r} is a server's own account: the worker account needs a name of its own "
                         f"(default {WORKER_USER})")
    if not _WORKER_NAME.fullmatch(name or ""):
        raise ValueError(f"worker account name {name!r}: use letters, digits and '_' (at most 32, not starting "
                         "with a digit)")
    target = configured_target()
    admin = admin_connection(target)
    if admin is None:
        raise DatabaseError(f"no administrative access to {target} to create {name!r} "
                            "(set DJ_ADMIN_USER / DJ_ADMIN_PASS)")
    secret = f"worker.{name}.password"
    try:
        app_user, app_password = app_credentials()
        if not can_login(target, app_user, app_password):      # before anything is created
            raise DatabaseError(
                f"the application account {app_user!r} cannot log in on {target}: `db worker-user` declares the "
                "study's tables as that account, so bring this server up for the pipeline first (`neuralreg db "
                "up`), or set DJ_USER/DJ_PASS to the application account")
        helper = accounts(admin)
        exists = helper.user_exists(name)
        stored = settings.read_secret(secret)
        ours = exists and bool(stored) and can_login(target, name, stored)
        if exists:
            if helper.is_privileged(name):
                raise DatabaseError(f"the account {name!r} on {target} has server-wide or administrative rights: "
                                    "it cannot become a worker account (--force does not apply); choose another "
                                    "--name")
            if not ours and not force:
                raise DatabaseError(
                    f"the account {name!r} already exists on {target}, and this project holds no working password "
                    f"for it ({settings.secrets_dir() / secret}): it was not created here, and making it the worker "
                    "account would reset its password and change its rights. Choose another --name, or pass --force "
                    "to take it over")
        keep = ours and not rotate
        password = stored if keep else _secrets.token_urlsafe(24)
        declare_study(prefix)
        ensure_worker_user(admin, name, None if keep else password, prefix=prefix)   # None: keeps its password
        grants = helper.describe_worker_grants(prefix)
    finally:
        getattr(locals().get("helper"), "close", lambda: None)()
        admin.close()
    path = settings.write_secret(secret, password)
    env = settings.project_root() / ".env"
    if env.is_file():
        update_env_file(settings.project_root(), {"NEURALREG_WORKER_USER": name, "NEURALREG_WORKER_PASSWORD": password})
    if ours and not rotate:
        what = "kept its password (--rotate makes a new one)"
    elif ours:
        what = "made a new password (workers using the old one fail to reconnect: restart them)"
    elif exists:
        what = "took over the existing account (--force): its password was reset"
    else:
        what = "created it"
    say(f"worker account {name!r} on {target} ({grants}): {what}; its password is in {path}"
        + (" and in .env (docker compose workers)" if env.is_file() else "")
        + f". Workers use: DJ_USER={name} DJ_PASS=<that password>")
    return path


def user_exists(admin, user: str) -> bool:
    try:
        return accounts(admin).user_exists(user)
    except Exception:      # no read access to the account list: assume it exists, never reset silently
        return True


def apply_server_settings(admin) -> list[str]:
    """Raise the server's limits to SERVER_SETTINGS where it allows; return what could not be set."""
    return accounts(admin).apply_server_settings()


