"""Checks that a current ClickHouse (chdb-core, ClickHouse 26.x in-process)
accepts our DDL and our Native insert payload as sent.

  chdb_check.py --ddl FILE --native FILE --table [DB.]NAME [--settings "k=v,k2=v2"]

Runs the DDL file (one or more statements separated by ';') in a throw-away
chdb session (databases it names are created first), then inserts the Native
file with `INSERT INTO <table> FROM INFILE ... [SETTINGS ...] FORMAT Native`,
the same body an HTTP insert sends (columns matched by name, not position). Prints one JSON object:
  {"version": "26.9.x", "rows": <count() of the table>, "rows_written": <this insert>}
Exits non-zero with a message on stderr if the DDL or the insert fails.
"""
import argparse
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from readers_common import die, emit  # noqa: E402

IDENT = r"(?:`[^`]+`|\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_]*)"
CREATE_RE = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?(?:TABLE|VIEW|MATERIALIZED\s+VIEW|DICTIONARY)\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?(" + IDENT + r")\s*\.\s*" + IDENT, re.I)
CREATE_DB_RE = re.compile(r"^\s*CREATE\s+DATABASE\b", re.I)


def split_statements(text):
    # Good enough for DDL: drop -- comments, split on ';' outside quotes.
    out, cur, quote = [], [], None
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    for ch in "\n".join(lines):
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'`\"":
            quote = ch
            cur.append(ch)
        elif ch == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ddl", required=True, help="file with CREATE statement(s)")
    p.add_argument("--native", required=True, help="file with the Native-format insert body")
    p.add_argument("--table", required=True, help="[db.]table to insert into")
    p.add_argument("--settings", default="", help="insert settings, e.g. 'max_insert_block_size=1000'")
    p.add_argument("--allow-count-mismatch", action="store_true",
                   help="engines whose count() differs from rows inserted (Null, views...)")
    a = p.parse_args()

    try:
        ddl = open(a.ddl, encoding="utf-8").read()
        payload = open(a.native, "rb").read()
    except OSError as e:
        die(str(e))
    stmts = split_statements(ddl)
    if not stmts:
        die(f"no statement in {a.ddl}")

    import chdb
    from chdb import session

    workdir = tempfile.mkdtemp(prefix="chdb_check_")
    sess = session.Session(os.path.join(workdir, "db"))
    try:
        version = str(sess.query("SELECT version()", "TSVRaw")).strip()
        # Databases named by the DDL (or the target table) must exist first.
        dbs = {m.group(1) for s in stmts if not CREATE_DB_RE.match(s) for m in CREATE_RE.finditer(s)}
        if "." in a.table:
            dbs.add(a.table.split(".", 1)[0])
        for db in sorted(dbs):
            sess.query(f"CREATE DATABASE IF NOT EXISTS {db}")
        for s in stmts:
            try:
                sess.query(s)
            except Exception as e:
                die(f"DDL rejected by ClickHouse {version}: {e}\n--- statement ---\n{s}")
        count = lambda: int(str(sess.query(f"SELECT count() FROM {a.table}", "TSVRaw")).strip())
        before = count()
        # FROM INFILE: the client side reads the file and sends it as the insert
        # body, like an HTTP `INSERT ... FORMAT Native`. (chdb's streaming
        # send_insert() was seen to swallow server-side errors such as
        # TOO_MANY_PARTS while reporting rows as written: not used.)
        path = os.path.abspath(a.native).replace("\\", "\\\\").replace("'", "\\'")
        insert = f"INSERT INTO {a.table} FROM INFILE '{path}'"
        if a.settings.strip():
            insert += " SETTINGS " + a.settings.strip()
        insert += " FORMAT Native"
        try:
            res = sess.query(insert)
        except Exception as e:
            die(f"Native insert rejected by ClickHouse {version}: {e}")
        rows = count()
        written = int(res.rows_written())
        if rows - before != written and not a.allow_count_mismatch:
            die(f"insert reported {written} rows written but count() of {a.table} went {before} -> {rows}")
        emit({"version": version, "rows": rows, "rows_written": written})
    finally:
        try:
            sess.close()
        except Exception:
            pass
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
