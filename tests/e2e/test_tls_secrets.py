"""TLS and secrets: a run over Kafka SASL_SSL (SCRAM-SHA-512) and ClickHouse HTTPS, both
trusting the stack's private CA, with every credential read from a file (`${file:...}`,
as a Kubernetes Secret mount) or the environment; and starts that fail on a refused
login. No secret may appear in anything the service prints: text logs, JSON logs,
stdout, the error line.
"""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer

import lake
from conftest import (BIN, KAFKA, clickhouse, create_topic, free_port, iceberg_count, produce_records,
                      unique, wait_until)

STATE = Path(os.environ.get("STACK_STATE", "/var/tmp/ingest-stack"))
SECRETS = Path(os.environ.get("STACK_SECRETS", STATE / "secrets"))
CA = Path(os.environ.get("STACK_CA", STATE / "tls" / "ca.pem"))
SASL_BOOTSTRAP = os.environ.get("KAFKA_SASL_BOOTSTRAP", "localhost:9094")
SASL_USER = os.environ.get("KAFKA_SASL_USER", "ingest")
SASL_PASSWORD_FILE = Path(os.environ.get("KAFKA_SASL_PASSWORD_FILE", SECRETS / f"kafka-{SASL_USER}.password"))
CLICKHOUSE_HTTPS = os.environ.get("CLICKHOUSE_HTTPS_URL", "https://localhost:8443")
CLICKHOUSE_PASSWORD_FILE = Path(os.environ.get("CLICKHOUSE_INGEST_PASSWORD_FILE",
                                               SECRETS / "clickhouse-ingest.password"))
POSTGRES_PORT = os.environ.get("POSTGRES_PORT", "5432")
POSTGRES_PASSWORD_FILE = Path(os.environ.get("POSTGRES_INGEST_PASSWORD_FILE", SECRETS / "postgres-ingest.password"))

SCHEMA = "fields:\n  - {name: id, type: int64}\n  - {name: name, type: string}\n"
# What a user's wrong password looks like: anything the service must not print.
WRONG = "Wr0ng-Secret-" + "7f3a9c"


def read_secret(path):
    assert path.exists(), f"{path} is missing: start the stack with deploy/local/up.sh"
    text = path.read_text()
    return text[:-1] if text.endswith("\n") else text


def sasl_properties(password_ref):
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": SASL_USER, "sasl.password": password_ref, "ssl.ca.location": str(CA)}


def https_clickhouse(database, password_ref):
    return {"url": CLICKHOUSE_HTTPS, "user": "ingest", "password": password_ref, "database": database,
            "tls": {"ca_file": str(CA)}}


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", POSTGRES_PORT, "-U", "postgres", "-d", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-qc", sql], check=True, capture_output=True, timeout=60)


def write_config(setup, name, config):
    config.setdefault("server", {"listen": f"127.0.0.1:{free_port()}"})
    path = setup.tmp / name
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


class Run:
    """`ingest run` with its own environment and arguments, every output line kept."""

    def __init__(self, setup, config_path, env, log_json):
        self.port = json.loads(config_path.read_text())["server"]["listen"].rsplit(":", 1)[1]
        self.log_path = setup.tmp / f"run-{len(setup.processes)}.log"
        self.log = open(self.log_path, "w")
        args = [str(BIN)] + (["--log-json"] if log_json else []) + ["run", "--config", str(config_path)]
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        setup.processes.append(self)

    def ready(self):
        assert self.proc.poll() is None, f"ingest exited early:\n{self.output()[-5000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=5) as resp:
                return resp.status == 200, resp.status
        except urllib.error.HTTPError as e:
            return False, e.code
        except OSError as e:
            return False, str(e)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        self.log.close()
        return code

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()


def service_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUST_LOG"))}
    # Debug level: whatever the libraries say about connections is checked too.
    env["RUST_LOG"] = "debug,h2=info,hyper=info,rustls=info"
    env.update(extra)
    return env


def assert_no_secret(text, secrets, what):
    for name, value in secrets.items():
        assert value and value not in text, f"{what} shows the {name}"


def dead_letter_keys(topic, wanted, timeout=60):
    """Keys on the dead-letter topic, read until `wanted` are all there."""
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": unique("reader"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    keys, deadline = set(), time.time() + timeout
    while not wanted <= keys and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            keys.add(m.key())
    consumer.close()
    return keys


@pytest.fixture
def catalog_database():
    name = unique("e2e_tls_catalog")
    psql(f"CREATE DATABASE {name} OWNER ingest")
    yield name
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_run_over_sasl_ssl_and_https_keeps_every_secret_out_of_the_logs(setup, catalog_database):
    secrets = {"Kafka SASL password": read_secret(SASL_PASSWORD_FILE),
               "ClickHouse password": read_secret(CLICKHOUSE_PASSWORD_FILE),
               "catalog password": read_secret(POSTGRES_PASSWORD_FILE),
               "S3 secret key": lake.SECRET_KEY}
    topic = create_topic(unique("tls_events"), 2)
    dead_letter = create_topic(unique("tls_dlq"), 1)
    schema = setup.schema("s.yaml", SCHEMA)
    bucket = lake.create_bucket(unique("tls-lake").replace("_", "-"))
    catalog_uri = (f"postgres://ingest:${{file:{POSTGRES_PASSWORD_FILE}}}@127.0.0.1:{POSTGRES_PORT}/"
                   f"{catalog_database}")
    config = write_config(setup, "config.yaml", {
        "kafka": {"brokers": SASL_BOOTSTRAP, "group_id": setup.group,
                  "properties": sasl_properties(f"${{file:{SASL_PASSWORD_FILE}}}")},
        "clickhouse": https_clickhouse(setup.database, "${CH_PASSWORD}"),
        "iceberg": {"catalog": {"type": "sql", "uri": catalog_uri, "warehouse": f"s3://{bucket}/warehouse",
                                "properties": {"s3.endpoint": lake.S3_URL, "s3.region": lake.REGION,
                                               "s3.path-style-access": "true",
                                               "s3.access-key-id": lake.ACCESS_KEY,
                                               "s3.secret-access-key": "${S3_SECRET}"}},
                    "namespace": setup.namespace},
        "dead_letter": {"topic": dead_letter},
        "routes": [{"topics": [topic], "schema": str(schema),
                    "clickhouse": {"table": "events", "order_by": ["id"]},
                    "iceberg": {"table": "events"},
                    "batch": {"max_rows": 40, "max_age": "500ms"}}],
    })
    env = service_env(CH_PASSWORD=secrets["ClickHouse password"], S3_SECRET=lake.SECRET_KEY)

    out = subprocess.run([str(BIN), "validate", "--connect", "--config", str(config)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "clickhouse: server" in out.stdout and "iceberg: catalog reachable" in out.stdout, out.stdout
    assert_no_secret(out.stdout + out.stderr, secrets, "validate --connect")

    # Two runs: text logs for the first half, JSON logs (resuming) for the second; a bad
    # record in each goes to the dead-letter topic over SASL_SSL too.
    warehouse = f"s3://{bucket}/warehouse"
    catalog_reader_uri = catalog_uri.replace(f"${{file:{POSTGRES_PASSWORD_FILE}}}", secrets["catalog password"])
    s3 = lake.S3_PROPERTIES
    outputs = []
    for half, log_json in ((0, False), (1, True)):
        ids = range(half * 100, half * 100 + 100)
        produce_records(topic, [(str(i), {"id": i, "name": f"n{i}"}) for i in ids])
        produce_records(topic, [(f"bad-{half}", b'{"id": "not a number"}')])
        run = Run(setup, config, env, log_json)
        wait_until("ingest /ready", run.ready, timeout=120)
        wait_until("both sinks hold the rows", lambda: (
            int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"]) == ids.stop
            and iceberg_count(catalog_reader_uri, warehouse, f"{setup.namespace}.events", s3) == ids.stop,
            run.output()[-2000:]), timeout=180)
        # The dead-letter topic is at-least-once: a restart may send a record again.
        keys = dead_letter_keys(dead_letter, {f"bad-{h}".encode() for h in range(half + 1)})
        assert keys == {f"bad-{h}".encode() for h in range(half + 1)}, f"{keys}\n{run.output()[-3000:]}"
        assert run.stop() == 0, run.output()[-5000:]
        outputs.append(run.output())

    got = sorted(int(r["id"]) for r in clickhouse(f"SELECT id FROM {setup.database}.events"))
    assert got == list(range(200)), "ClickHouse must hold every good record exactly once"
    assert iceberg_count(catalog_reader_uri, warehouse, f"{setup.namespace}.events", s3) == 200

    text, json_lines = outputs
    assert "connected to ClickHouse" in text and "flushed" in text, text[-3000:]
    records = [json.loads(line) for line in json_lines.splitlines() if line.strip()]
    assert any(r.get("fields", {}).get("message") == "flushed" for r in records), json_lines[-3000:]
    for what, output in (("text logs", text), ("JSON logs", json_lines)):
        assert_no_secret(output, secrets, what)


def failing_starts():
    """(case, config maker, what the error line must say); each maker returns the
    config, the environment and the secret used."""

    def catalog_port_1(setup):
        return ({"kafka": {"brokers": KAFKA, "group_id": setup.group},
                 "iceberg": {"catalog": {"type": "sql", "uri": f"postgres://ingest:{WRONG}@127.0.0.1:1/db",
                                         "warehouse": f"file://{setup.tmp}/w"},
                             "namespace": "ns"},
                 "routes": [{"topics": [unique("t")], "schema": str(setup.schema("s.yaml", SCHEMA)),
                             "iceberg": {"table": "t"}}]},
                service_env(), WRONG)

    def catalog_refused(setup):
        config, env, secret = catalog_port_1(setup)
        config["iceberg"]["catalog"]["uri"] = f"postgres://ingest:{WRONG}@127.0.0.1:{POSTGRES_PORT}/postgres"
        return config, env, secret

    def sasl_refused(setup):
        return ({"kafka": {"brokers": SASL_BOOTSTRAP, "group_id": setup.group,
                           "properties": sasl_properties("${file:wrong.password}")},
                 "clickhouse": https_clickhouse(setup.database, f"${{file:{CLICKHOUSE_PASSWORD_FILE}}}"),
                 "routes": [{"topics": [create_topic(unique("t"), 1)],
                             "schema": str(setup.schema("s.yaml", SCHEMA)), "clickhouse": {"table": "t"}}]},
                service_env(), WRONG)

    def clickhouse_refused(setup):
        return ({"kafka": {"brokers": SASL_BOOTSTRAP, "group_id": setup.group,
                           "properties": sasl_properties(f"${{file:{SASL_PASSWORD_FILE}}}")},
                 "clickhouse": https_clickhouse(setup.database, "${CH_PASSWORD}"),
                 "routes": [{"topics": [create_topic(unique("t"), 1)],
                             "schema": str(setup.schema("s.yaml", SCHEMA)), "clickhouse": {"table": "t"}}]},
                service_env(CH_PASSWORD=WRONG), WRONG)

    return {
        "catalog unreachable": (catalog_port_1, {"validate": "unreachable: timed out", "run": "pool timed out"},
                                "postgres://ingest:***@127.0.0.1:1/db"),
        "catalog login refused": (catalog_refused, {"validate": "password authentication failed",
                                                    "run": "password authentication failed"},
                                  f"postgres://ingest:***@127.0.0.1:{POSTGRES_PORT}/postgres"),
        "kafka login refused": (sasl_refused, {"validate": "SASL authentication error", "run": "refused the login"},
                                SASL_BOOTSTRAP),
        "clickhouse login refused": (clickhouse_refused, {"validate": "Wrong password", "run": "Wrong password"},
                                     CLICKHOUSE_HTTPS),
    }


FAILING = failing_starts()


@pytest.mark.parametrize("command", ["validate", "run", "run --log-json"])
@pytest.mark.parametrize("case", sorted(FAILING))
def test_failing_start_names_the_problem_without_the_secret(setup, case, command):
    make, expected, names = FAILING[case]
    config, env, secret = make(setup)
    (setup.tmp / "wrong.password").write_text(secret + "\n")
    path = write_config(setup, "config.yaml", config)
    if command == "validate":
        args = [str(BIN), "validate", "--connect", "--timeout", "5s", "--config", str(path)]
    else:
        args = [str(BIN)] + (["--log-json"] if "json" in command else []) + ["run", "--config", str(path)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode != 0, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-3000:]
    assert expected[command.split()[0]] in errors[0], errors[0]
    assert names in errors[0], errors[0]
    assert secret not in out.stdout + out.stderr, "the secret was printed"
