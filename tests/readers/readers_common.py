"""Shared by the independent readers: arguments, the id checksum, JSON output.

The id checksum is order-independent and defined identically everywhere (the
Rust side must match it):
  for each id: s = its string form (integers in decimal, strings as is),
               h = first 8 bytes of SHA-256(UTF-8 bytes of s), read as an
                   unsigned big-endian 64-bit integer;
  checksum = (sum of all h) mod 2**64, printed as a decimal string.
An empty table has checksum "0".
"""
import argparse
import base64
import datetime
import decimal
import hashlib
import json
import math
import os
import urllib.parse
import sys
import uuid

MOD = 1 << 64


def id_string(v):
    if isinstance(v, bool) or v is None:
        raise ValueError(f"unsupported id value {v!r}")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8")
    if isinstance(v, uuid.UUID):
        return str(v)
    raise ValueError(f"unsupported id type {type(v).__name__}: {v!r}")


def id_hash(v):
    return int.from_bytes(hashlib.sha256(id_string(v).encode("utf-8")).digest()[:8], "big")


def id_checksum(values):
    total = 0
    for v in values:
        total = (total + id_hash(v)) % MOD
    return str(total)


def json_safe(v):
    """Plain JSON value with the same rendering whichever reader produced it."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)  # NaN/inf are not JSON
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc)
        return v.isoformat()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return str(v)


def sort_key(row, id_column):
    v = row.get(id_column)
    return (0, v, "") if isinstance(v, int) else (1, 0, str(v))


def iceberg_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--catalog-uri", required=True,
                   help="sqlite:////abs/path/catalog.db or postgresql+psycopg2://user@host:port/db")
    p.add_argument("--warehouse", required=True, help="file:///abs/warehouse")
    p.add_argument("--catalog-name", default="ingest")
    p.add_argument("--table", required=True, help="namespace.table")
    p.add_argument("--id-column", default="id")
    p.add_argument("--rows", action="store_true", help="also print all rows, sorted by id")
    a = p.parse_args()
    if "." not in a.table:
        p.error("--table must be namespace.table")
    return a


def emit(obj):
    json.dump(obj, sys.stdout, separators=(",", ":"), sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def die(msg, code=1):
    print(f"{sys.argv[0]}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def sqlalchemy_uri(uri):
    """Catalog URI for pyiceberg's SqlCatalog (SQLAlchemy form); accepts jdbc: forms too."""
    if uri.startswith("jdbc:sqlite:"):
        path = uri[len("jdbc:sqlite:"):]
        if path.startswith("file:"):
            path = path[len("file:"):]
        return "sqlite:///" + os.path.abspath(path)
    if uri.startswith("jdbc:postgresql:"):
        return "postgresql+psycopg2:" + uri[len("jdbc:postgresql:"):]
    return uri


def jdbc_uri(uri):
    """(jdbc url, extra catalog properties) for Java's JdbcCatalog.

    sqlite:////abs/path.db         -> jdbc:sqlite:/abs/path.db
    sqlite:///rel/path.db          -> jdbc:sqlite:<absolute path>
    postgresql[+driver]://u:p@h:port/db -> jdbc:postgresql://h:port/db, jdbc.user/jdbc.password
    jdbc:...                       -> unchanged
    """
    if uri.startswith("jdbc:"):
        return uri, {}
    u = urllib.parse.urlsplit(uri)
    scheme = u.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not path or path == ":memory:":
            raise ValueError(f"need a sqlite file path in {uri!r}")
        return "jdbc:sqlite:" + os.path.abspath(path.split("?", 1)[0]), {}
    if scheme in ("postgresql", "postgres"):
        props = {}
        if u.username:
            props["jdbc.user"] = urllib.parse.unquote(u.username)
        if u.password:
            props["jdbc.password"] = urllib.parse.unquote(u.password)
        host = u.hostname or "127.0.0.1"
        port = f":{u.port}" if u.port else ""
        return f"jdbc:postgresql://{host}{port}{u.path}", props
    raise ValueError(f"unsupported catalog URI {uri!r}")


def check_sqlite_exists(uri):
    """SQLite silently creates a missing file: fail clearly instead."""
    if uri.startswith("sqlite:"):
        path = uri.split(":///", 1)[1].split("?", 1)[0] if ":///" in uri else ""
        if not path or not os.path.isfile(path):
            die(f"catalog database {path!r} does not exist ({uri})")
