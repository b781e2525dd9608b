"""Issue 20: the Grafana dashboard and the alert rules in deploy/monitoring/, checked
against a real Prometheus (Debian's package, installed by `make stack`) scraping a running
service: every dashboard query and every alert expression returns data, and the
sink-down alert fires while ClickHouse is stopped.

The rules are the shipped file with each `for:` shortened to 5 s (the expressions are
the same), so the test waits seconds rather than the minutes an operator wants."""
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import (ROOT, clickhouse, create_topic, free_port, ingest_produce, produce_records, unique,
                      wait_until)
from support.clickhouse import clickhouse_service

EVENTS_SCHEMA = ROOT / "schemas/examples/events.yaml"
MONITORING = ROOT / "deploy/monitoring"
# Grafana's variables set to the test's route and both sinks (matchers that need the
# label, so a panel naming a label the metric lacks returns nothing); $__rate_interval as
# Grafana would pick it for a 1 s scrape.
GRAFANA_VARIABLES = {"$route": "events", "$sink": "clickhouse .*|iceberg .*", "$__rate_interval": "30s"}
THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+]+\s*$")


class Prometheus:
    def __init__(self, tmp, target):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "5s"
        (tmp / "rules.yaml").write_text(yaml.safe_dump(rules))
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yaml")],
            "scrape_configs": [{"job_name": "ingest", "static_configs": [{"targets": [target]}]}],
        }))
        self.log = open(tmp / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = tmp / "prometheus.log"

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def dashboard_queries():
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            queries.append((panel["title"], expr))
    return queries


def alert_rules():
    return [rule for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
            for rule in group["rules"]]


def test_every_rule_ends_in_one_threshold():
    """The form the test below relies on to evaluate each expression's value."""
    for rule in alert_rules():
        assert THRESHOLD.search(rule["expr"]), rule["alert"]
        assert "docs/operations.md" in rule["annotations"]["description"], rule["alert"]


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus is installed by `make stack`")
def test_dashboard_and_alerts_against_a_real_prometheus(setup, tmp_path):
    count, bad = 6000, 10
    topic = create_topic(unique("prom"), 2)
    dead = create_topic(unique("prom_dlq"), 1)
    route = {"name": "events", "topics": [topic], "schema": str(EVENTS_SCHEMA),
             "clickhouse": {"table": "events", "order_by": ["event_id"]},
             "iceberg": {"table": "events"},
             "batch": {"max_rows": 2000, "max_age": "300ms"}}
    ingest = setup.start(setup.config([route], dead_letter=dead))
    ingest.wait_ready()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{ingest.port}")
    stopped = False
    try:
        wait_until("prometheus up", lambda: (prometheus.proc.poll() is None and _ready(prometheus), None), timeout=60)
        ingest_produce(topic, EVENTS_SCHEMA, count, "event_id")
        produce_records(topic, [(f"bad-{i}", "not json {") for i in range(bad)])
        wait_until("every row written, the bad records dead-lettered", lambda: (
            ingest.metric("ingest_rows_written_total") == 2 * count
            and ingest.metric("ingest_records_rejected_total") == bad, None), timeout=120)
        # A few scrapes after the writes, inside every rate window.
        wait_until("prometheus scraped the writes", lambda: (
            sum(float(s["value"][1]) for s in prometheus.query("ingest_rows_written_total")) == 2 * count, None),
            timeout=30)
        time.sleep(3)
        empty = [(title, expr) for title, expr in dashboard_queries() if not prometheus.query(expr)]
        assert not empty, f"dashboard queries without data: {empty}"
        rules = alert_rules()
        empty = [rule["alert"] for rule in rules if not prometheus.query(THRESHOLD.sub("", rule["expr"]))]
        assert not empty, f"alert expressions without data: {empty}"
        loaded = {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}
        assert set(loaded) == {r["alert"] for r in rules}, loaded.keys()
        assert all(r["health"] == "ok" for r in loaded.values()), loaded
        assert not _firing(prometheus, "IngestSinkDown")

        clickhouse_service("stop")
        stopped = True
        ingest_produce(topic, EVENTS_SCHEMA, 1000, "event_id", start_id=count)
        sink = f"clickhouse {setup.database}.events"
        wait_until("IngestSinkDown firing for ClickHouse", lambda: (
            sink in _firing(prometheus, "IngestSinkDown"), _firing(prometheus, "IngestSinkDown")), timeout=120)
        # Iceberg is not down.
        assert _firing(prometheus, "IngestSinkDown") == {sink}
        clickhouse_service("start")
        stopped = False
        wait_until("the alert resolved", lambda: (not _firing(prometheus, "IngestSinkDown"), None), timeout=180)
        wait_until("ClickHouse caught up", lambda: (
            int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"]) == count + 1000, None),
            timeout=120)
        assert ingest.stop() == 0, ingest.logs()
    finally:
        if stopped:
            clickhouse_service("start")
        prometheus.stop()


def _ready(prometheus):
    try:
        with urllib.request.urlopen(prometheus.url + "/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _firing(prometheus, name):
    """The `sink` labels of the firing alerts named `name`."""
    return {a["labels"].get("sink") for a in prometheus.api("alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == "firing"}
