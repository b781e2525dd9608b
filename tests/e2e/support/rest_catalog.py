"""The fault-injecting Iceberg REST catalog tests/fixtures/rest_catalog.py as a child
process: an outage of the catalog server is stopping it and starting it again.
"""
import subprocess
import sys
import time

from .stack import ROOT

REST_FIXTURE = ROOT / "tests/fixtures/rest_catalog.py"
REST_CATALOG_NAME = "rest_fixture"


class RestCatalogProcess:
    """tests/fixtures/rest_catalog.py as a child process that can be stopped and started
    again on the same port, SQLite file and warehouse (an outage of the catalog server:
    the state survives, the endpoint is gone)."""

    def __init__(self, tmp_path, port, extra_args=()):
        self.port = port
        self.extra_args = list(extra_args)
        self.uri = f"http://127.0.0.1:{port}"
        self.db = tmp_path / "rest-catalog.db"
        self.warehouse = f"file://{tmp_path}/warehouse"
        self.log_path = tmp_path / "rest-catalog.log"
        self.proc = None
        self.log = None

    def start(self, timeout=30):
        import socket
        self.log = open(self.log_path, "a")
        # -u: its log is read while it runs (the commit count, the tail on failure).
        self.proc = subprocess.Popen([sys.executable, "-u", str(REST_FIXTURE), "--port", str(self.port),
                                      "--catalog-db", str(self.db), "--warehouse", self.warehouse,
                                      "--catalog-name", REST_CATALOG_NAME, *self.extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            assert self.proc.poll() is None, f"REST catalog fixture exited:\n{self.log_path.read_text()[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.time() < deadline, "REST catalog fixture did not start"
                time.sleep(0.2)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log:
            self.log.close()
            self.log = None

    def tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def table(self, ident):
        """The table read straight from the fixture's SQLite catalog (works while the
        server is down), or None while it does not exist."""
        from pyiceberg.catalog.sql import SqlCatalog
        if not self.db.exists():
            return None
        try:
            cat = SqlCatalog(REST_CATALOG_NAME, uri=f"sqlite:///{self.db}", warehouse=self.warehouse,
                             init_catalog_tables="false")
            return cat.load_table(ident)
        except Exception:
            return None
