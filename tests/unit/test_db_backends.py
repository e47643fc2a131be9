"""Backend-aware database code without a server of that kind: the account statements each backend gets
(MySQL 8.4 / MariaDB and PostgreSQL), the live-connection query of populate.jobs, the S3 store setting,
and MySQL 8's default authentication, caching_sha2_password, exercised end to end against a small
server that speaks that part of the MySQL protocol (no MySQL 8.4 server is installable here)."""
import hashlib
import socket
import struct
import threading
import types

import pytest

from neuralreg_schema import db, settings
from populate import jobs


class Recorder:
    """A DB-API connection stand-in that records statements and answers account-existence queries."""

    def __init__(self, existing=()):
        self.sql, self.existing = [], set(existing)

    def cursor(self):
        rec = self

        class Cursor:
            description = None

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, sql, args=None):
                rec.sql.append((sql, args))
                self.rows = ()
                self.description = None
                if "FROM pg_roles" in sql or "FROM mysql.user" in sql or "FROM pg_database" in sql:
                    self.rows = ((1,),) if args and args[0] in rec.existing else ()
                    self.description = ("x",)
                elif "FROM pg_namespace" in sql:
                    self.rows, self.description = (("neuralreg_experiment",),), ("nspname",)

            def fetchall(self):
                return self.rows

        return Cursor()


class PgRecorder(Recorder):
    """Taken for a psycopg2 connection (db.backend_of looks at the class's module)."""

    __module__ = "psycopg2.extensions"


def _statements(recorder):
    return [sql for sql, _ in recorder.sql]


STUDY = ["neuralreg_s1_experiment"]
TABLES = {"neuralreg_s1_experiment": ["scan", "scan__unit", "#image_kind", "~lineage", "__neuron", "__neuron__unit",
                                      "~~neuron"]}


def test_mysql_statements_are_valid_on_mysql_84_and_mariadb():
    admin = Recorder()
    helper = db.accounts(admin)
    assert isinstance(helper, db.MySQLAccounts)
    helper.ensure_app_user("neuralreg", "pw")
    helper.ensure_worker_user("neuralreg_worker", "pw2", schemas=STUDY, tables=TABLES)
    sql = _statements(admin)
    assert sql.count("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s") == 6      # 3 hosts x 2 accounts
    assert sql.count("ALTER USER %s@%s IDENTIFIED BY %s") == 6
    grants = [s for s in sql if s.startswith("GRANT")]
    app = [s for s in grants if s.startswith("GRANT ALL PRIVILEGES")]
    assert len(app) == 3 and all("ON `neuralreg\\_%%`.* TO %s@%s" in s for s in app)
    worker = [s for s in grants if s not in app]
    # the study's schema (its name escaped as a pattern), its results and its job queue; nothing else
    assert set(worker) == {"GRANT SELECT ON `neuralreg\\_s1\\_experiment`.* TO %s@%s",
                           "GRANT INSERT ON `neuralreg_s1_experiment`.`__neuron` TO %s@%s",
                           "GRANT INSERT ON `neuralreg_s1_experiment`.`__neuron__unit` TO %s@%s",
                           "GRANT SELECT, INSERT, UPDATE, DELETE ON `neuralreg_s1_experiment`.`~~neuron` TO %s@%s"}
    assert len(worker) == 3 * 4
    # neither the removed-in-8.4 password syntax nor the deprecated FLUSH PRIVILEGES / PASSWORD()
    assert not any(k in s for s in sql for k in ("PASSWORD(", "FLUSH", "mysql_native_password", "IDENTIFIED WITH"))


@pytest.mark.parametrize("held,revoked", [
    (["GRANT SELECT, DELETE ON `neuralreg\\_%`.* TO `w`@`%`"], True),                # an earlier version's
    (["GRANT SELECT ON `neuralreg\\_other\\_experiment`.* TO `w`@`%`"], True),      # another study's
    (["GRANT SELECT ON *.* TO `w`@`%`"], True),                                   # server-wide
    (["GRANT SELECT ON `neuralreg\\_s1\\_experiment`.* TO `w`@`%`",                  # its own: kept
      "GRANT INSERT ON `neuralreg_s1_experiment`.`__neuron` TO `w`@`%`"], False)])
def test_mysql_worker_rights_elsewhere_are_revoked(held, revoked):
    class Holding(Recorder):
        def cursor(self):
            cursor = super().cursor()
            execute = cursor.execute

            def answer(sql, args=None):
                execute(sql, args)
                if sql.startswith("SHOW GRANTS"):
                    cursor.rows = tuple((line,) for line in ["GRANT USAGE ON *.* TO `w`@`%`", *held])
                    cursor.description = ("grants",)
            cursor.execute = answer
            return cursor
    admin = Holding()
    db.accounts(admin).ensure_worker_user("w", None, schemas=STUDY, tables=TABLES)
    sql = _statements(admin)
    assert sql.count("REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s") == (3 if revoked else 0)
    assert not any("IDENTIFIED BY" in s for s in sql)                             # None: the password is kept


def test_postgres_statements():
    admin = PgRecorder(existing={"nr_app"})
    admin.info = types.SimpleNamespace(dbname="study")          # already in the pipeline's database
    helper = db.PostgresAccounts(admin, "study")
    helper.ensure_app_user("nr_app", "pw")
    helper.ensure_worker_user("nr_w", "pw2", app_user="nr_app", schemas=STUDY, tables=TABLES)
    sql = _statements(admin)
    assert 'ALTER ROLE "nr_app" WITH LOGIN PASSWORD %s' in sql              # existing: password reset
    assert 'CREATE ROLE "nr_w" WITH LOGIN PASSWORD %s' in sql
    assert 'CREATE DATABASE "study" ENCODING \'UTF8\'' in sql
    assert 'GRANT CONNECT, CREATE, TEMPORARY ON DATABASE "study" TO "nr_app"' in sql
    assert 'GRANT CONNECT ON DATABASE "study" TO "nr_w"' in sql
    assert 'ALTER DEFAULT PRIVILEGES FOR ROLE "nr_app" REVOKE ALL ON SCHEMAS FROM "nr_w"' in sql
    assert 'REVOKE ALL ON SCHEMA "neuralreg_experiment" FROM "nr_w"' in sql      # another prefix's schema
    worker = [s for s in sql if s.startswith("GRANT") and s.endswith('TO "nr_w"')]
    assert set(worker) == {'GRANT CONNECT ON DATABASE "study" TO "nr_w"',
                           'GRANT USAGE ON SCHEMA "neuralreg_s1_experiment" TO "nr_w"',
                           'GRANT SELECT, REFERENCES ON ALL TABLES IN SCHEMA "neuralreg_s1_experiment" TO "nr_w"',
                           'GRANT INSERT ON TABLE "neuralreg_s1_experiment"."__neuron" TO "nr_w"',
                           'GRANT INSERT ON TABLE "neuralreg_s1_experiment"."__neuron__unit" TO "nr_w"',
                           'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "neuralreg_s1_experiment"."~~neuron" '
                           'TO "nr_w"'}
    assert not any("DROP" in s or "ALTER TABLE" in s or "TRUNCATE" in s for s in sql)
    with pytest.raises(ValueError):
        helper.ensure_app_user('x"; DROP ROLE postgres; --', "pw")          # names are checked, then quoted


def test_worker_account_needs_its_own_name():
    with pytest.raises(ValueError):
        db.ensure_worker_user(Recorder(), "neuralreg", "pw", app_user="neuralreg")


def test_live_connections_query_per_backend():
    seen = []

    class Conn:
        def __init__(self, backend):
            self.adapter = types.SimpleNamespace(backend=backend)

        def query(self, sql):
            seen.append(sql)
            return types.SimpleNamespace(fetchall=lambda: [(7,), (9,)])

    assert jobs.live_connections(Conn("mysql")) == {7, 9}
    assert jobs.live_connections(Conn("postgresql")) == {7, 9}
    assert seen == ["SELECT ID FROM information_schema.PROCESSLIST", "SELECT pid FROM pg_stat_activity"]


def test_store_spec_from_neuralreg_store(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURALREG_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert settings.store_spec("/data/store") == {"protocol": "file", "location": "/data/store"}
    monkeypatch.setenv("NEURALREG_S3_ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("NEURALREG_S3_ACCESS_KEY", "ak")
    monkeypatch.delenv("NEURALREG_S3_SECRET_KEY", raising=False)
    settings.write_secret("stores.main.secret_key", "sk")
    spec = settings.store_spec("s3://bucket/study/a")
    assert spec == {"protocol": "s3", "endpoint": "http://minio:9000", "bucket": "bucket", "location": "study/a",
                    "secure": False, "access_key": "ak", "secret_key": "sk"}
    with pytest.raises(ValueError):
        settings.store_spec("s3:///nobucket")


def test_postgres_backend_defaults(monkeypatch):
    dj = settings.configure()
    saved = {k: dj.config[k] for k in ("database.backend", "database.port", "database.name")}
    try:
        monkeypatch.delenv("DJ_PORT", raising=False)
        dj.config["database.backend"] = "postgresql"
        dj.config["database.port"] = 3306                     # what datajoint.json says (MySQL's)
        dj.config["database.name"] = None
        settings.configure()
        assert (dj.config["database.port"], dj.config["database.name"]) == (5432, settings.PG_DATABASE)
        target = db.configured_target()
        assert target.postgres and target.port == 5432 and target.database == settings.PG_DATABASE
    finally:
        for k, v in saved.items():
            dj.config[k] = v


# ------------------------------------------------------------------ caching_sha2_password

def _packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def _read(conn) -> tuple[int, bytes]:
    head = b""
    while len(head) < 4:
        chunk = conn.recv(4 - len(head))
        if not chunk:
            raise EOFError
        head += chunk
    length, seq = int.from_bytes(head[:3], "little"), head[3]
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return seq, body


class CachingSha2Server(threading.Thread):
    """Accepts MySQL clients and authenticates them the way MySQL 8.4 does on a cold cache without TLS
    (caching_sha2_password 'perform full authentication': the client asks for the server's RSA public
    key and sends the password RSA-OAEP encrypted, XORed with the nonce), then answers OK to queries."""

    PASSWORD = b"s3cret-pass"

    def __init__(self):
        super().__init__(daemon=True)
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.logins, self.key_requests = [], 0

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self.serve(conn)
                except (EOFError, OSError):
                    continue                     # the client hung up: wait for the next one

    def serve(self, conn):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        nonce = bytes(range(1, 21))
        caps = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x80000            # no CLIENT_SSL: no TLS offered
        greeting = (b"\x0a" + b"8.4.0-caching-sha2-test\x00" + struct.pack("<I", 42) + nonce[:8] + b"\x00"
                    + struct.pack("<H", caps & 0xFFFF) + bytes([255]) + struct.pack("<H", 2)
                    + struct.pack("<H", caps >> 16) + bytes([21]) + bytes(10) + nonce[8:] + b"\x00"
                    + b"caching_sha2_password\x00")
        conn.sendall(_packet(0, greeting))
        seq, _response = _read(conn)                                   # HandshakeResponse41
        conn.sendall(_packet(seq + 1, b"\x01\x04"))                    # perform full authentication
        seq, data = _read(conn)
        if data == b"\x02":                                            # the client asks for the public key
            self.key_requests += 1
            conn.sendall(_packet(seq + 1, b"\x01" + self.pem))
            seq, data = _read(conn)
        plain = self.key.decrypt(data, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),
                                                    label=None))
        password = bytes(b ^ nonce[i % 20] for i, b in enumerate(plain))
        ok = password == self.PASSWORD + b"\x00"
        self.logins.append(ok)
        if not ok:
            message = b"Access denied for user (using password: YES)"
            conn.sendall(_packet(seq + 1, b"\xff" + struct.pack("<H", 1045) + b"#28000" + message))
            return
        ok_packet = b"\x00\x00\x00" + struct.pack("<HH", 2, 0)           # OK, autocommit on
        conn.sendall(_packet(seq + 1, ok_packet))
        while True:                                                    # SET NAMES, SET AUTOCOMMIT, ...
            seq, command = _read(conn)
            if command[:1] == b"\x01":                                  # COM_QUIT
                return
            conn.sendall(_packet(seq + 1, ok_packet))


@pytest.fixture
def sha2_server():
    pytest.importorskip("cryptography", reason="the cryptography package (a dependency) is missing")
    server = CachingSha2Server()
    server.start()
    yield server
    server.sock.close()


def test_db_connects_with_caching_sha2_password_without_tls(sha2_server):
    target = db.Target("127.0.0.1", sha2_server.port)
    connection = db.connect(target, "neuralreg", sha2_server.PASSWORD.decode())
    connection.close()
    assert sha2_server.logins == [True] and sha2_server.key_requests == 1     # the RSA path, not TLS
    import pymysql
    with pytest.raises(pymysql.err.OperationalError) as denied:
        db.connect(target, "neuralreg", "wrong")
    assert denied.value.args[0] == 1045 and sha2_server.logins == [True, False]


def test_without_cryptography_the_login_fails(sha2_server, monkeypatch):
    """What the issue found: PyMySQL cannot answer the full authentication without `cryptography`."""
    import pymysql._auth as auth
    if not hasattr(auth, "_have_cryptography"):
        pytest.skip("this PyMySQL version checks for cryptography differently")
    monkeypatch.setattr(auth, "_have_cryptography", False)
    with pytest.raises(RuntimeError, match="cryptography"):
        db.connect(db.Target("127.0.0.1", sha2_server.port), "neuralreg", sha2_server.PASSWORD.decode())


def test_scramble_is_sha256_based():
    """The fast-path scramble PyMySQL sends first (checked by a server with the password cached)."""
    from pymysql import _auth
    nonce = bytes(range(1, 21))
    p1 = hashlib.sha256(b"pw").digest()
    p3 = hashlib.sha256(hashlib.sha256(p1).digest() + nonce).digest()
    assert _auth.scramble_caching_sha2(b"pw", nonce) == bytes(a ^ b for a, b in zip(p1, p3))


def test_job_queues_are_declared_once_despite_a_racing_worker(monkeypatch):
    """populate.jobs.declare: the 'already exists' of a worker that lost the race is retried, other
    errors are not."""
    monkeypatch.setattr("time.sleep", lambda s: None)

    class Queue:
        def __init__(self, failures):
            self.is_declared, self.failures, self.calls = False, list(failures), 0

        def declare(self):
            self.calls += 1
            if self.failures:
                self.is_declared = True            # the other worker's declaration went through
                raise self.failures.pop(0)
            self.is_declared = True

    def table(failures):
        return type("Neuron", (), {"jobs": Queue(failures), "__module__": "experiment"})

    raced = table([RuntimeError('relation "idx_~~neuron_status" already exists')])
    jobs.declare([raced])
    assert raced.jobs.calls == 1 and raced.jobs.is_declared
    broken = table([RuntimeError("permission denied for schema x")])
    with pytest.raises(RuntimeError, match="permission denied"):
        jobs.declare([broken])
