"""Connections to the pipeline's database server: where it is (`Target`, `configured_target`), plain
DB-API connections for bring-up and administration (`connect`, `query`), and what the server reports.
DataJoint's own connection is configured by `settings.configure()`; this module is for what DataJoint does
not do (accounts, server settings, listing schemas before any exists)."""
from __future__ import annotations

import socket
from dataclasses import dataclass

from .. import settings

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


def pymysql_driver():
    import pymysql
    return pymysql


def psycopg2_driver():
    try:
        import psycopg2
    except ImportError as exc:
        raise DatabaseError("the PostgreSQL backend needs psycopg2: pip install 'neuralreg[postgres]'") from exc
    return psycopg2


def connect(target: Target, user: str, password: str | None = None, unix_socket: str | None = None,
             timeout: int = 5, database: str | None = None):
    """A plain DB-API connection (autocommit) to the target: PyMySQL or psycopg2 by its backend. On
    PostgreSQL `unix_socket` is the socket's folder and `database` overrides the target's database.
    MySQL 8.4 logs users in with caching_sha2_password: over a connection without TLS, PyMySQL sends
    the password RSA-encrypted with the server's public key, for which it needs `cryptography`
    (a dependency of this package)."""
    if target.postgres:
        psycopg2 = psycopg2_driver()
        connection = psycopg2.connect(host=unix_socket or target.host, port=target.port, user=user,
                                      password=password or None, dbname=database or target.database,
                                      connect_timeout=timeout)
        connection.autocommit = True
        return connection
    pymysql = pymysql_driver()
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
        connect(target, user, password).close()
        return True
    except Exception:
        return False


def query(connection, sql: str, args=None):
    """Run one statement; its rows (an empty tuple for a statement that returns none)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall() if cursor.description is not None else ()



def server_report(connection) -> dict:
    if backend_of(connection) == "postgresql":
        return {"version": query(connection, "SHOW server_version")[0][0],
                "server_encoding": query(connection, "SHOW server_encoding")[0][0],
                "lc_collate": query(connection, "SHOW lc_collate")[0][0],
                "database": query(connection, "SELECT current_database()")[0][0]}
    rows = dict(query(connection, "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                                   "('version', 'max_allowed_packet', 'collation_server', 'wait_timeout')"))
    return rows


def schemas(connection, prefix: str = settings.DEFAULT_PREFIX) -> list[str]:
    """The schemas (MySQL: databases) whose names start with `prefix`, on either backend."""
    rows = query(connection, "SELECT schema_name FROM information_schema.schemata")
    return sorted(r[0] for r in rows if r[0].startswith(prefix))


