"""Database bring-up: `neuralreg db up` / `neuralreg db status` / `neuralreg db down` / `db worker-user`.

Two backends, as DataJoint 2.3 has them: MySQL (8.4 LTS; MariaDB 10.11+ works, unofficially) and
PostgreSQL 15+ (`DJ_BACKEND=postgresql`). `up` is idempotent and tries, in order:
1. the configured server (datajoint.json / DJ_HOST / DJ_PORT / DJ_BACKEND), if it answers;
2. `docker compose up -d db` (or the `postgres` profile's service), if a Docker engine answers;
3. MySQL family only: a private local MariaDB/MySQL server with its data under `.local/mariadb/`
   (Debian's mariadb-server is installed first when the binary is missing and we run as root).
It then makes sure the application account exists with the password in `.secrets/` (generated on
first use, never committed), that DataJoint-friendly settings are in force where we may set them,
and that a DataJoint connection works. Administrative access, needed only to create accounts,
comes from DJ_ADMIN_USER / DJ_ADMIN_PASS, else the compose `.env`'s root password (local targets),
else root (postgres on PostgreSQL) without password over TCP, else the server's unix socket as the
current OS user (Debian's unix_socket / peer authentication).

Accounts and grants go through one backend-aware helper, `accounts(admin)`: MySQLAccounts (statements
valid on MySQL 8.4 and MariaDB 10.11+: CREATE USER IF NOT EXISTS ... IDENTIFIED BY, GRANT on the
`neuralreg\\_%` schemas) or PostgresAccounts (CREATE ROLE ... LOGIN PASSWORD, the pipeline's own
database, schema and default privileges).
"""
from __future__ import annotations

import getpass
import os
import re
import secrets as _secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import settings

APP_USER = "neuralreg"
WORKER_USER = "neuralreg_worker"
# MySQL family: the schemas the accounts may use, as a GRANT pattern: every schema named
# neuralreg_<...>, i.e. the default prefix's and every prefix of the form neuralreg_<name> (pipeline
# schemas are <prefix>_<module>). `\_` is a literal underscore, `%` any rest. MySQL 8.4 still honours
# wildcards in database-level grants (deprecated since 8.2; they become literals if partial_revokes is ON,
# which the compose file leaves OFF, the default).
SCHEMA_PATTERN = "neuralreg\\_%"
MYSQL_HOSTS = ("localhost", "127.0.0.1", "%")      # MariaDB resolves 127.0.0.1 to localhost
# DataJoint-friendly server settings (also in docker-compose.yml)
SERVER_SETTINGS = {
    "max_allowed_packet": 268435456,       # 256 MiB: large <blob> rows
    "wait_timeout": 28800,                 # s: idle connections of long-running workers
    "interactive_timeout": 28800,          # s
    "net_read_timeout": 600,               # s
    "net_write_timeout": 600,              # s
}


class DatabaseError(RuntimeError):
    """The database could not be reached or prepared; the message says what to do."""


@dataclass
class Target:
    host: str
    port: int
    backend: str = "mysql"               # 'mysql' (MySQL 8.4, MariaDB) or 'postgresql'
    database: str | None = None          # PostgreSQL: the database holding the pipeline's schemas

    @property
    def is_local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

    @property
    def postgres(self) -> bool:
        return self.backend == "postgresql"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (f"/{self.database}" if self.postgres else "")


def configured_target() -> Target:
    dj = settings.configure()
    backend = settings.backend(dj)
    host = dj.config["database.host"] or "127.0.0.1"
    port = dj.config["database.port"]
    if ":" in host and port is None:
        host, port = host.rsplit(":", 1)
    database = (dj.config["database.name"] or settings.PG_DATABASE) if backend == "postgresql" else None
    return Target(host=host, port=int(port or settings.DEFAULT_PORTS[backend]), backend=backend, database=database)


def answers(target: Target, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            return True
    except OSError:
        return False


def _pymysql():
    import pymysql
    return pymysql


def _psycopg2():
    try:
        import psycopg2
    except ImportError as exc:
        raise DatabaseError("the PostgreSQL backend needs psycopg2: pip install 'neuralreg[postgres]'") from exc
    return psycopg2


def _connect(target: Target, user: str, password: str | None = None, unix_socket: str | None = None,
             timeout: int = 5, database: str | None = None):
    """A plain DB-API connection (autocommit) to the target: PyMySQL or psycopg2 by its backend. On
    PostgreSQL `unix_socket` is the socket's folder and `database` overrides the target's database.
    MySQL 8.4 logs users in with caching_sha2_password: over a connection without TLS, PyMySQL sends
    the password RSA-encrypted with the server's public key, for which it needs `cryptography`
    (a dependency of this package)."""
    if target.postgres:
        psycopg2 = _psycopg2()
        connection = psycopg2.connect(host=unix_socket or target.host, port=target.port, user=user,
                                      password=password or None, dbname=database or target.database,
                                      connect_timeout=timeout)
        connection.autocommit = True
        return connection
    pymysql = _pymysql()
    kwargs = dict(user=user, password=password or "", connect_timeout=timeout, autocommit=True)
    if unix_socket:
        return pymysql.connect(unix_socket=unix_socket, **kwargs)
    return pymysql.connect(host=target.host, port=target.port, **kwargs)


def driver_errors() -> tuple:
    """psycopg2's connection error when it is installed (the CLI reports it like PyMySQL's)."""
    try:
        import psycopg2
    except ImportError:
        return ()
    return (psycopg2.OperationalError,)


def backend_of(connection) -> str:
    """'postgresql' for a psycopg2 connection, else 'mysql'."""
    return "postgresql" if type(connection).__module__.startswith("psycopg2") else "mysql"


def app_credentials() -> tuple[str | None, str | None]:
    dj = settings.configure()
    return dj.config["database.user"], dj.config["database.password"]


def can_login(target: Target, user: str | None, password: str | None) -> bool:
    if not user:
        return False
    try:
        _connect(target, user, password).close()
        return True
    except Exception:
        return False


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
            connection = _connect(target, **attempt, **({"database": "postgres"} if target.postgres else {}))
        except Exception:
            continue
        # a socket may belong to another server on this machine: accept it only if it is the target
        if attempt.get("unix_socket") and accounts(connection).port() != target.port:
            connection.close()
            continue
        return connection
    return None


def _query(connection, sql: str, args=None):
    """Run one statement; its rows (an empty tuple for a statement that returns none)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall() if cursor.description is not None else ()


# what a worker needs on the pipeline's schemas: read and write rows, create its job tables (CREATE,
# INDEX, REFERENCES); no DROP, ALTER, GRANT or access to other databases
WORKER_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "INDEX", "REFERENCES", "LOCK TABLES",
                     "CREATE TEMPORARY TABLES")
# PostgreSQL: the same on the app account's schemas (USAGE + CREATE: job tables) and tables (rows)
PG_WORKER_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "REFERENCES")

_PG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class MySQLAccounts:
    """Accounts and grants on MySQL 8.4 and MariaDB 10.11+ (one statement set valid on both)."""

    backend = "mysql"

    def __init__(self, admin):
        self.admin = admin

    def _grant(self, privileges: str, user: str, host: str) -> None:
        # PyMySQL formats with %: the pattern's own % doubled
        _query(self.admin, f"GRANT {privileges} ON `{SCHEMA_PATTERN.replace('%', '%%')}`.* TO %s@%s", (user, host))

    def _ensure(self, user: str, password: str) -> None:
        for host in MYSQL_HOSTS:
            _query(self.admin, "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password))
            _query(self.admin, "ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))

    def ensure_app_user(self, user: str, password: str) -> None:
        self._ensure(user, password)
        for host in MYSQL_HOSTS:
            self._grant("ALL PRIVILEGES", user, host)

    def ensure_worker_user(self, user: str, password: str, app_user: str | None = None) -> None:
        self._ensure(user, password)
        for host in MYSQL_HOSTS:
            self._grant(", ".join(WORKER_PRIVILEGES), user, host)

    def drop_user(self, user: str) -> None:
        for host in MYSQL_HOSTS:
            _query(self.admin, "DROP USER IF EXISTS %s@%s", (user, host))

    def user_exists(self, user: str) -> bool:
        return bool(_query(self.admin, "SELECT 1 FROM mysql.user WHERE User = %s", (user,)))

    def port(self) -> int:
        return int(_query(self.admin, "SELECT @@port")[0][0])

    def apply_server_settings(self) -> list[str]:
        """Raise the server's limits to SERVER_SETTINGS where it allows; return what could not be set."""
        failed = []
        for name, value in SERVER_SETTINGS.items():
            try:
                current = int(_query(self.admin, f"SELECT @@GLOBAL.{name}")[0][0])
                if current < value:
                    _query(self.admin, f"SET GLOBAL {name} = {int(value)}")
            except Exception as exc:
                failed.append(f"{name}: {exc}")
        return failed

    @staticmethod
    def describe_worker_grants() -> str:
        return f"{', '.join(WORKER_PRIVILEGES)} on `{SCHEMA_PATTERN}` schemas"


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
            psycopg2 = _psycopg2()
            self._in_db = psycopg2.connect(host=info.host, port=info.port, user=info.user,
                                           password=info.password or None, dbname=self.database, connect_timeout=5)
            self._in_db.autocommit = True
        return self._in_db

    def close(self) -> None:
        if self._in_db is not None:
            self._in_db.close()
            self._in_db = None

    def _ensure_role(self, user: str, password: str) -> None:
        verb = "ALTER" if self.user_exists(user) else "CREATE"
        _query(self.admin, f"{verb} ROLE {self.ident(user)} WITH LOGIN PASSWORD %s", (password,))

    def ensure_database(self) -> None:
        if not _query(self.admin, "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)):
            _query(self.admin, f"CREATE DATABASE {self.ident(self.database)} ENCODING 'UTF8'")

    def ensure_app_user(self, user: str, password: str) -> None:
        self._ensure_role(user, password)
        self.ensure_database()
        _query(self.admin, f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {self.ident(self.database)} "
                           f"TO {self.ident(user)}")

    def ensure_worker_user(self, user: str, password: str, app_user: str | None = None) -> None:
        app_user = app_user or APP_USER
        worker, app, tables = self.ident(user), self.ident(app_user), ", ".join(PG_WORKER_TABLE_PRIVILEGES)
        self._ensure_role(user, password)
        self.ensure_database()
        _query(self.admin, f"GRANT CONNECT, TEMPORARY ON DATABASE {self.ident(self.database)} TO {worker}")
        db = self._db()
        for sql in (f"ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT USAGE, CREATE ON SCHEMAS TO {worker}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT {tables} ON TABLES TO {worker}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT USAGE, SELECT ON SEQUENCES TO {worker}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {worker} GRANT {tables} ON TABLES TO {app}"):
            _query(db, sql)
        owned = _query(db, "SELECT nspname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
                           "WHERE r.rolname = %s", (app_user,))
        for (schema,) in owned:
            quoted = '"' + schema.replace('"', '""') + '"'
            _query(db, f"GRANT USAGE, CREATE ON SCHEMA {quoted} TO {worker}")
            _query(db, f"GRANT {tables} ON ALL TABLES IN SCHEMA {quoted} TO {worker}")
            _query(db, f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quoted} TO {worker}")

    def drop_user(self, user: str) -> None:
        if not self.user_exists(user):
            return
        if _query(self.admin, "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)):
            _query(self._db(), f"DROP OWNED BY {self.ident(user)}")   # its objects, grants, default privileges
        _query(self.admin, f"DROP ROLE IF EXISTS {self.ident(user)}")

    def user_exists(self, user: str) -> bool:
        return bool(_query(self.admin, "SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)))

    def port(self) -> int:
        return int(_query(self.admin, "SHOW port")[0][0])

    def apply_server_settings(self) -> list[str]:
        return []           # no packet limit; idle sessions are kept (idle_session_timeout 0 by default)

    def describe_worker_grants(self) -> str:
        return (f"USAGE, CREATE on the app account's schemas and {', '.join(PG_WORKER_TABLE_PRIVILEGES)} on their "
                f"tables, in database {self.database!r}")


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


def ensure_worker_user(admin, user: str, password: str, app_user: str | None = None) -> None:
    """Create (or reset) a least-privilege worker account: it fills tables and job queues that exist,
    but cannot drop or alter them. All workers of one study share one account (jobs.reclaim sees only
    the connections of its own account on MySQL)."""
    app_user = app_user or app_credentials()[0] or APP_USER
    if not user or user == app_user:
        raise ValueError(f"the worker account needs its own name, not {user!r}")
    helper = accounts(admin)
    try:
        helper.ensure_worker_user(user, password, app_user)
    finally:
        getattr(helper, "close", lambda: None)()


def drop_account(admin, user: str) -> None:
    """Remove an account (tests; on PostgreSQL with what it owns in the pipeline's database)."""
    helper = accounts(admin)
    try:
        helper.drop_user(user)
    finally:
        getattr(helper, "close", lambda: None)()


def worker_user(name: str = WORKER_USER, say=print) -> Path:
    """Create the worker account `name` with a generated password, stored in .secrets/ (0600) and, for
    docker compose on this machine, in `.env` (NEURALREG_WORKER_USER / NEURALREG_WORKER_PASSWORD);
    returns the password file. Needs the administrative access `up` uses."""
    target = configured_target()
    admin = admin_connection(target)
    if admin is None:
        raise DatabaseError(f"no administrative access to {target} to create {name!r} "
                            "(set DJ_ADMIN_USER / DJ_ADMIN_PASS)")
    password = _secrets.token_urlsafe(24)
    try:
        ensure_worker_user(admin, name, password)
        grants = accounts(admin).describe_worker_grants()
    finally:
        admin.close()
    path = settings.write_secret(f"worker.{name}.password", password)
    env = settings.project_root() / ".env"
    if env.is_file():
        update_env_file(settings.project_root(), {"NEURALREG_WORKER_USER": name, "NEURALREG_WORKER_PASSWORD": password})
    say(f"worker account {name!r} on {target} ({grants}); its password is in {path}"
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


def server_report(connection) -> dict:
    if backend_of(connection) == "postgresql":
        return {"version": _query(connection, "SHOW server_version")[0][0],
                "server_encoding": _query(connection, "SHOW server_encoding")[0][0],
                "lc_collate": _query(connection, "SHOW lc_collate")[0][0],
                "database": _query(connection, "SELECT current_database()")[0][0]}
    rows = dict(_query(connection, "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                                   "('version', 'max_allowed_packet', 'collation_server', 'wait_timeout')"))
    return rows


def schemas(connection, prefix: str = settings.DEFAULT_PREFIX) -> list[str]:
    """The schemas (MySQL: databases) whose names start with `prefix`, on either backend."""
    rows = _query(connection, "SELECT schema_name FROM information_schema.schemata")
    return sorted(r[0] for r in rows if r[0].startswith(prefix))


# ------------------------------------------------------------------ docker

def docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# the passwords docker-compose.yml reads from `.env`, generated once: the MySQL root and application
# accounts, the least-privilege worker account (created by docker/mysql-init on a new volume), the
# PostgreSQL superuser (profile `postgres`) and the MinIO root user (profile `minio`)
ENV_PASSWORDS = ("MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD", "NEURALREG_WORKER_PASSWORD", "POSTGRES_PASSWORD",
                 "MINIO_ROOT_PASSWORD")


def _read_env_file(path: Path) -> dict:
    values = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                values[k.strip()] = v.strip()
    return values


def _write_env_file(path: Path, values: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# generated by `neuralreg db up` / `neuralreg db worker-user`; never commit this file\n")
        f.writelines(f"{k}={v}\n" for k, v in values.items())


def ensure_env_file(root: Path) -> dict:
    """The ignored `.env` docker compose reads: passwords (ENV_PASSWORDS) generated once, mode 600."""
    path = root / ".env"
    values = _read_env_file(path)
    missing = [name for name in ENV_PASSWORDS if not values.get(name)]
    for name in missing:
        values[name] = _secrets.token_urlsafe(24)
    if missing or not path.is_file():
        _write_env_file(path, values)
    return values


def update_env_file(root: Path, changes: dict) -> dict:
    """Set some values in `.env` (created with its generated passwords when absent)."""
    values = {**ensure_env_file(root), **changes}
    _write_env_file(root / ".env", values)
    return values


def docker_up(root: Path, target: Target, say) -> None:
    """`docker compose up -d db` (MySQL 8.4) or, on PostgreSQL, the `postgres` profile's service."""
    env = ensure_env_file(root)
    if target.postgres:
        # the container's superuser provisions the application account afterwards (admin_connection
        # reads POSTGRES_PASSWORD from .env)
        command = ["docker", "compose", "--profile", "postgres", "up", "-d", "postgres"]
        user, password = "postgres", env["POSTGRES_PASSWORD"]
    else:
        command = ["docker", "compose", "up", "-d", "db"]
        user, password = env.get("MYSQL_USER") or APP_USER, env["MYSQL_PASSWORD"]
        settings.write_secret("database.user", user)
        settings.write_secret("database.password", password)
        settings.write_secret(f"worker.{env.get('NEURALREG_WORKER_USER') or WORKER_USER}.password",
                              env["NEURALREG_WORKER_PASSWORD"])
    say(f"starting the database with `{' '.join(command)}`")
    run = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if run.returncode != 0:
        raise DatabaseError(f"`{' '.join(command)}` failed:\n{run.stderr.strip()}")
    wait_for_login(target, user, password, timeout=180, say=say,
                   **({"database": "postgres"} if target.postgres else {}))


# ------------------------------------------------------------------ local server

def local_dir(root: Path | None = None) -> Path:
    return (root or settings.project_root()) / ".local" / "mariadb"


def find_server_binary() -> str | None:
    for name in ("mariadbd", "mysqld"):
        for path in (shutil.which(name), f"/usr/sbin/{name}"):
            if path and Path(path).is_file():
                return path
    return None


def install_mariadb(say) -> str:
    if os.geteuid() != 0:
        raise DatabaseError("no MariaDB/MySQL server binary found and not running as root: install one "
                            "(`sudo apt-get install mariadb-server`), or start Docker, or point DJ_HOST at a server")
    say("installing Debian's mariadb-server (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "mariadb-server"]):
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if run.returncode != 0:
            raise DatabaseError(f"`{' '.join(cmd)}` failed:\n{run.stderr.strip()[-2000:]}")
    binary = find_server_binary()
    if not binary:
        raise DatabaseError("mariadb-server installed but no mariadbd binary found")
    return binary


def start_local_server(datadir: Path, port: int, say=print, binary: str | None = None) -> Path:
    """Start a private MariaDB/MySQL server on 127.0.0.1:`port` with its data under `datadir`.

    Initialises the data directory on first use. Returns the unix socket path. The server runs in the
    background (its pid in `datadir.parent / 'mysqld.pid'`, its log in `mysqld.log`).
    """
    binary = binary or find_server_binary() or install_mariadb(say)
    base = datadir.parent
    base.mkdir(parents=True, exist_ok=True)
    sock = base / "mysqld.sock"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    if not (datadir / "mysql").is_dir():
        installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if installer:
            cmd = [installer, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=socket",
                   "--skip-test-db", *as_root]
        else:   # MySQL 8
            cmd = [binary, "--no-defaults", "--initialize-insecure", f"--datadir={datadir}", *as_root]
        say(f"initialising a local database in {datadir}")
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            shutil.rmtree(datadir, ignore_errors=True)
            raise DatabaseError(f"initialising {datadir} failed:\n{(run.stdout + run.stderr).strip()[-2000:]}")
    args = [binary, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
            "--bind-address=127.0.0.1", f"--pid-file={base / 'mysqld.pid'}", f"--log-error={base / 'mysqld.log'}",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
            "--innodb-buffer-pool-size=256M", *as_root,
            *[f"--{k.replace('_', '-')}={v}" for k, v in SERVER_SETTINGS.items()]]
    say(f"starting a local server on 127.0.0.1:{port} (data in {datadir})")
    with open(base / "mysqld.out", "ab") as log:
        subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if sock.exists() and answers(Target("127.0.0.1", port)):
            return sock
        time.sleep(0.5)
    tail = (base / "mysqld.log").read_text()[-2000:] if (base / "mysqld.log").exists() else ""
    raise DatabaseError(f"the local server did not answer on 127.0.0.1:{port} within 60 s. Log:\n{tail}")


def process_gone(pid: int) -> bool:
    """True when process `pid` has exited (our own exited child is reaped; a zombie counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z"
    except (OSError, IndexError):
        return False


def stop_local_server(base: Path, timeout: float = 30) -> bool:
    pidfile = base / "mysqld.pid"
    if not pidfile.is_file():
        return False
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return False
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.2)
    return True


def wait_for_login(target: Target, user: str, password: str, timeout: float = 60, say=print,
                   database: str | None = None) -> None:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            _connect(target, user, password, database=database).close()
            return
        except Exception as exc:       # server still starting
            last = exc
            time.sleep(1)
    raise DatabaseError(f"cannot log in as {user} at {target} after {timeout:.0f} s: {last}")


# ------------------------------------------------------------------ up / status / down

def _provision_account(target: Target, user: str | None, password: str | None, reset_password: bool,
                       say) -> tuple[str, str]:
    """Create the application account, or set its password; an existing account is changed only with
    `reset_password`, so that a new checkout cannot lock out the workers of another one."""
    admin = admin_connection(target)
    if admin is None:
        raise DatabaseError(
            f"{target} answers, but the application user cannot log in and no "
            "administrative login works: set DJ_USER/DJ_PASS to an existing account, or DJ_ADMIN_USER/"
            "DJ_ADMIN_PASS to an account that may create users")
    try:
        user = user or APP_USER
        if user_exists(admin, user) and not reset_password:
            known = "the configured password is wrong" if password else "its password is unknown here"
            raise DatabaseError(
                f"the account {user!r} already exists on {target} but {known}: put the right "
                f"one in {settings.secrets_dir() / 'database.password'} (or DJ_USER/DJ_PASS), or run "
                "`neuralreg db up --reset-password` (workers using the old password will fail to reconnect)")
        if not password:
            password = _secrets.token_urlsafe(24)
            settings.write_secret("database.user", user)
            settings.write_secret("database.password", password)
            say(f"created credentials for {user!r} in {settings.secrets_dir()}")
        ensure_app_user(admin, user, password)
    finally:
        admin.close()
    dj = settings.configure()
    dj.config["database.user"], dj.config["database.password"] = user, password
    return user, password


def up(say=print, reset_password: bool = False) -> dict:
    """Bring a usable database up (see module docstring and `_provision_account`); return a summary."""
    root = settings.project_root()
    target = configured_target()
    mode = "configured server"
    if not answers(target):
        if docker_engine_answers() and (root / "docker-compose.yml").is_file() and target.is_local:
            docker_up(root, target, say)
            mode = "docker compose"
        elif target.is_local and target.postgres:
            raise DatabaseError(
                f"no PostgreSQL answers at {target.host}:{target.port}: start it (Debian: `apt-get install "
                "postgresql`, then `pg_ctlcluster 15 main start`), or `docker compose --profile postgres up -d "
                "postgres`, or point DJ_HOST/DJ_PORT at your server")
        elif target.is_local:
            start_local_server(local_dir(root) / "data", target.port, say=say)
            mode = "local server"
        else:
            raise DatabaseError(f"the configured server {target} does not answer, and it is "
                                "not local, so none can be started for it: check DJ_HOST/DJ_PORT or the network")
    user, password = app_credentials()
    if not can_login(target, user, password):
        user, password = _provision_account(target, user, password, reset_password, say)
    wait_for_login(target, user, password, timeout=30, say=say)
    if not (settings.user_secrets_dir() / "database.password").is_file() and not os.environ.get("DJ_PASS"):
        settings.write_secret("database.user", user)          # let other checkouts here reuse the account
        settings.write_secret("database.password", password)
    problems = []
    admin = admin_connection(target)
    if admin is not None:
        problems = apply_server_settings(admin)
        admin.close()
    connection = _connect(target, user, password)
    report = server_report(connection)
    connection.close()
    if not target.postgres and int(report.get("max_allowed_packet", 0)) < SERVER_SETTINGS["max_allowed_packet"]:
        problems.append(f"max_allowed_packet is {report.get('max_allowed_packet')} (< 256M): large in-table "
                        "blobs will fail; raise it in the server configuration")
    summary = {"mode": mode, "backend": target.backend, "host": target.host, "port": target.port,
               "database": target.database, "user": user, "version": report.get("version"),
               "max_allowed_packet": report.get("max_allowed_packet"),
               "collation_server": report.get("collation_server") or report.get("lc_collate"), "warnings": problems}
    say(f"database ready ({mode}): {user}@{target}, {target.backend} server {report.get('version')}")
    for problem in problems:
        say(f"  warning: {problem}")
    return summary


def status() -> dict:
    root = settings.project_root()
    target = configured_target()
    user, password = app_credentials()
    info = {"backend": target.backend, "host": target.host, "port": target.port, "database": target.database,
            "user": user, "answers": answers(target), "login": False, "local_server_pid": None, "docker": None}
    pidfile = local_dir(root) / "mysqld.pid"
    if pidfile.is_file():
        pid = int(pidfile.read_text().strip())
        try:
            os.kill(pid, 0)
            info["local_server_pid"] = pid
        except ProcessLookupError:
            pass
    if docker_engine_answers():
        run = subprocess.run(["docker", "compose", "ps", "--format", "{{.Service}}: {{.State}}"], cwd=root,
                             capture_output=True, text=True)
        info["docker"] = run.stdout.strip() or None
    if info["answers"] and can_login(target, user, password):
        info["login"] = True
        connection = _connect(target, user, password)
        info.update(server_report(connection))
        info["schemas"] = schemas(connection)
        connection.close()
    return info


def down(say=print) -> None:
    root = settings.project_root()
    if stop_local_server(local_dir(root)):
        say("stopped the local server")
    elif docker_engine_answers() and (root / "docker-compose.yml").is_file():
        subprocess.run(["docker", "compose", "--profile", "postgres", "stop", "db", "postgres"], cwd=root)
    else:
        say("nothing of ours to stop (a configured server is left running)")
