"""Errors as the one line the command prints (`neuralreg: error: ...`): the server's or the program's
words, without the SQL a database error may carry, a driver's numeric code, or line breaks."""
from __future__ import annotations

import re

_SQL = re.compile(r"\s*(SELECT|UPDATE|DELETE|INSERT|REPLACE|CREATE|DROP|ALTER|GRANT|REVOKE|WITH)\b", re.I)


def one_line(error: BaseException | str) -> str:
    """The error (an exception, or a message such as SystemExit's code) as one line, without the SQL a
    database error may carry (DataJoint's query errors hold the statement as an argument; PostgreSQL's
    messages quote it after 'LINE n:') and without a driver's numeric code (pymysql's (2003, "Can't
    connect ...")): the server's words only."""
    if not isinstance(error, BaseException):
        return one_line(Exception(str(error)))
    exc = error
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:     # "[Errno 2] ...: 'x'"
        text = f"{exc.strerror}: {exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return " ".join(text.split())
    args = [a for a in exc.args if not isinstance(a, int)]
    parts = [str(a) for a in args] if len(args) > 1 else [str(args[0]) if args and len(exc.args) > 1 else str(exc)]
    parts = [re.split(r"\n\s*LINE \d+:", part)[0] for part in parts if not _SQL.match(part)]
    text = " ".join(" ".join(dict.fromkeys(p.strip() for p in parts if p.strip())).split())
    return text or type(exc).__name__
