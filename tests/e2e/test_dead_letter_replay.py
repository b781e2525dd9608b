"""`ingest dlq replay` after a fix: dead letters land in both sinks once; a second replay
adds nothing; a replay killed half way and run again lands each once; what still fails
goes back to the dead-letter topic with its new reason, once."""
import json
import re
import subprocess
import time

from conftest import clickhouse, create_topic, iceberg_count, produce_records, unique, wait_until
from support.dead_letters import letters_only, read_letters
from support.logs import full_log
from support.processes import kill9
from support.stack import BIN

SCHEMA = """
fields:
  - {name: id, type: int64}
  - {name: name, type: string}
"""


def records(good, fixable, hopeless, start=0):
    """`good` records, `fixable` with the id as a string of digits (refused until the
    route coerces strings to numbers), `hopeless` with an id no fix reads."""
    out, i = [], start
    for _ in range(good):
        out.append((f"g{i}", json.dumps({"id": i, "name": f"n{i}"}).encode()))
        i += 1
    for _ in range(fixable):
        out.append((f"f{i}", json.dumps({"id": str(i), "name": f"n{i}"}).encode()))
        i += 1
    for _ in range(hopeless):
        out.append((f"h{i}", json.dumps({"id": f"abc{i}", "name": "x"}).encode()))
        i += 1
    out.append((f"u{i}", b"{broken"))  # another class: not selected by --reason
    return out


def counts(setup):
    row = clickhouse(f"SELECT count() AS c, uniqExact(id) AS u FROM {setup.database}.t")[0]
    return int(row["c"]), int(row["u"]), iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.t")


def start_with_letters(setup, produced, good, letters):
    """Runs the route without the fix until the good rows are in and the bad records are
    dead letters; returns (topic, dead-letter topic, config of the fixed route)."""
    topic = create_topic(unique("replay_src"), 2)
    dead = create_topic(unique("replay_dlq"), 2)
    schema = setup.schema("s.yaml", SCHEMA)
    produce_records(topic, produced)
    route = {"topics": [topic], "schema": str(schema),
             "clickhouse": {"table": "t", "order_by": ["id"]}, "iceberg": {"table": "t"},
             "batch": {"max_rows": 5000, "max_age": "300ms"}}
    before = setup.start(setup.config([route], dead_letter=dead))
    before.wait_ready()
    wait_until("good rows in and bad records dead-lettered", lambda: (
        counts(setup)[0] == good and len(letters_only(read_letters(dead))) == letters,
        (counts(setup), len(letters_only(read_letters(dead))))), timeout=120, interval=1)
    assert before.stop() == 0
    fixed = setup.config([{**route, "coerce": ["string_to_number"]}], dead_letter=dead)
    return topic, dead, fixed


def replay(config, *args, timeout=300):
    done = subprocess.run([str(BIN), "dlq", "replay", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    line = done.stdout.strip().splitlines()[-1]
    numbers = dict(zip(["took", "wrote", "sent_back", "unchanged", "before"], map(int, re.findall(r"\d+", line))))
    return numbers, line


def test_a_replay_after_the_fix_lands_once_and_a_second_adds_nothing(setup, capsys):
    produced = records(good=300, fixable=60, hopeless=10)
    topic, dead, fixed = start_with_letters(setup, produced, good=300, letters=71)
    ingest = setup.start(fixed)
    ingest.wait_ready()

    dry, _ = replay(fixed, "--reason", "schema_mismatch", "--dry-run")
    assert dry["took"] == 70, dry
    first, first_line = replay(fixed, "--reason", "schema_mismatch")
    assert (first["took"], first["wrote"], first["sent_back"]) == (70, 60, 10), first_line
    wait_until("the fixed records in both sinks", lambda: (counts(setup)[0] >= 360, counts(setup)),
               timeout=60, interval=1)
    second, second_line = replay(fixed, "--reason", "schema_mismatch")
    # The 10 sent back fail the same way again: left as they are; the 70 taken before are not taken again.
    assert (second["took"], second["wrote"], second["sent_back"], second["unchanged"], second["before"]) \
        == (10, 0, 0, 10, 70), second_line
    time.sleep(3)
    assert counts(setup) == (360, 360, 360)
    everything = read_letters(dead)
    letters = letters_only(everything)
    sent_back = [x for x in letters if "ingest.replay.of" in dict(x["own"])]
    assert len(letters) == 71 + 10 and len(sent_back) == 10, len(letters)
    assert all(x["key"].startswith(b"h") for x in sent_back)
    assert sum(1 for x in everything if x["receipt"]) == 70
    show = subprocess.run([str(BIN), "dlq", "show", "--config", str(fixed)], capture_output=True, text=True,
                          timeout=120)
    assert show.returncode == 0, show.stderr
    assert "schema_mismatch: 10 waiting, 70 replayed" in show.stdout, show.stdout
    assert "undecodable: 1 waiting, 0 replayed" in show.stdout, show.stdout
    assert ingest.stop() == 0
    with capsys.disabled():
        print(f"\n[replay] first: {first_line}\n[replay] second: {second_line}\n{show.stdout}")


def test_a_replay_killed_half_way_and_run_again_lands_each_once(setup, capsys):
    produced = records(good=100, fixable=3000, hopeless=0)
    topic, dead, fixed = start_with_letters(setup, produced, good=100, letters=3001)
    ingest = setup.start(fixed)
    ingest.wait_ready()
    log_path = setup.tmp / "replay-killed.log"
    with open(log_path, "w") as log:
        killed = subprocess.Popen([str(BIN), "dlq", "replay", "--config", str(fixed), "--reason", "schema_mismatch",
                                   "--per-transaction", "100"], stdout=log, stderr=subprocess.STDOUT)
        wait_until("a few replay transactions committed", lambda: (
            log_path.read_text().count("replay transaction committed") >= 3 or killed.poll() is not None,
            log_path.read_text()[-500:]), timeout=120, interval=0.01)
        killed.kill()
        killed.wait(30)
    committed = log_path.read_text().count("replay transaction committed")
    assert committed < 30, f"the replay finished before it was killed ({committed} transactions)"
    again, line = replay(fixed, "--reason", "schema_mismatch", "--per-transaction", "100")
    assert again["took"] + again["before"] == 3000 and again["before"] >= committed * 100, line
    assert again["wrote"] == again["took"], line
    wait_until("every fixed record in both sinks", lambda: (counts(setup)[0] >= 3100, counts(setup)),
               timeout=120, interval=1)
    time.sleep(3)
    assert counts(setup) == (3100, 3100, 3100)
    receipts = [x for x in read_letters(dead) if x["receipt"]]
    assert len(receipts) == 3000 == len({x["headers"]["ingest.receipt.of"] for x in receipts})
    assert ingest.stop() == 0
    assert "not sent again" not in full_log(ingest)
    with capsys.disabled():
        print(f"\n[replay] killed after {committed} transactions of 100; again: {line}")
