"""Fault injection end to end: whatever crashes, every sink ends with exactly the
produced events -- 0 missing, 0 duplicated -- and the positions it keeps (ClickHouse
ledger, Iceberg snapshot summary) end at the topic's end offsets.

    make test    # quick sizes (the file runs in a few minutes)
    make chaos   # CHAOS=full: 200 kill -9 over 1M events, 30 s ClickHouse / object-store outages, ...

Every size can be set on its own with CHAOS_<NAME> (see `size(...)` calls below);
CHAOS_SEED replays the random kill moments of a crash loop; CHAOS_RESTART_DELAY is the
wait between a SIGKILL and the replacement (default 0: the replacement joins while the
dead member's 6 s session still lives). Events are produced by a background thread while faults happen;
each test has its own topic, ClickHouse database, Iceberg catalog and consumer group.
Results (kills, elapsed time, what a frozen instance logged) are printed to the
terminal even when pytest captures output.
"""
import contextlib
import datetime
import random
import re
import time

from conftest import create_topic, free_port, iceberg_count, load_iceberg_table, unique
import lake
from support.chaos_run import KAFKA_PROPERTIES, RESTART_DELAY, SESSION_TIMEOUT, Notes, size, sizes
from support.clickhouse import (Merger, clickhouse_count, clickhouse_service, kill9_clickhouse_server,
                                running_inserts, with_table_settings)
from support.iceberg import snapshot_total
from support.kafka import BackgroundProducer
from support.logs import broker_overlaps, full_log, grep_logs, iso_now, log_report, overlaps
from support.processes import (alive, assigned, freeze, kill9, stop_together, thaw, wait_assignment,
                               wait_ready_status, wait_until)
from support.rest_catalog import RestCatalogProcess
from support.stack import EVENTS
from support.verify import drain, verify_sinks

DRAIN_TIMEOUT = size("drain_timeout", 180, 900)


def events_route(topic, batch, clickhouse_batch=None, iceberg_batch=None, clickhouse=True, iceberg=True):
    route = {"topics": [topic], "schema": str(EVENTS), "batch": batch}
    if clickhouse:
        route["clickhouse"] = {"table": "events", "order_by": ["event_id"],
                               **({"batch": clickhouse_batch} if clickhouse_batch else {})}
    if iceberg:
        route["iceberg"] = {"table": "events", **({"batch": iceberg_batch} if iceberg_batch else {})}
    return route


def start(setup, route, **config):
    return setup.start(setup.config([route], kafka_properties=KAFKA_PROPERTIES, **config))


def sql_iceberg(setup):
    return lambda: load_iceberg_table(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events")


def counts_of(setup, iceberg=None):
    iceberg = iceberg or sql_iceberg(setup)
    return lambda: {"clickhouse": clickhouse_count(setup.database), "iceberg": snapshot_total(iceberg())}


def grown(counts, before):
    """A wait_until predicate: every sink holds more rows than in `before`."""
    def check():
        now = counts()
        return all((now[k] or 0) > (before[k] or 0) for k in now), {"before": before, "now": now}
    return check


def finish(setup, note, producer, survivors, topic, partitions, iceberg=None, extra=""):
    """Produces the rest, waits for both sinks, stops the survivors with SIGTERM (exit 0
    expected) and compares each sink with the produced set."""
    expected = producer.finish()
    note(f"produced {len(expected)} events in {producer.finished_at - producer.started_at:.0f}s")
    shortfall = drain("drain", counts_of(setup, iceberg), len(expected), DRAIN_TIMEOUT)
    # A late duplicate would show up after the counts are reached: give it a moment.
    time.sleep(2)
    codes = {inst.log_path.name: inst.stop() for inst in survivors}
    summary = verify_sinks(topic=topic, partitions=partitions, expected=expected, producer=producer,
                           group=setup.group, database=setup.database,
                           iceberg_table=iceberg or sql_iceberg(setup), processes=setup.processes,
                           extra=f"{shortfall}\n{extra}")
    assert not shortfall, shortfall + "\n" + log_report(setup.processes)
    assert all(code == 0 for code in codes.values()), \
        f"a clean stop must exit 0: {codes}\n{log_report(setup.processes)}"
    note(summary.replace("\n", "; "))
    return expected


def test_crash_loop_kill_9_while_producing(setup, capsys):
    """One instance at a time, killed with SIGKILL at random moments (one in five during
    start-up) while events are produced; the replacement joins at once and resumes from
    what the sinks hold."""
    note = Notes(capsys, "crash-loop")
    partitions = 4
    total, kills, max_uptime, seed = sizes(crash_events=(20_000, 1_000_000), crash_kills=(5, 200),
                                           crash_max_uptime=(5.0, 6.0),
                                           seed=(time.time_ns() % 1_000_000, time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    topic = create_topic(unique("chaos_crash"), partitions)
    # Each sink at its own cadence: ClickHouse every 300 ms, Iceberg every 1.5 s (or 20k
    # rows), so kills land between, during and after writes of either sink.
    route = events_route(topic, {"max_rows": 5000, "max_age": "1s"},
                         clickhouse_batch={"max_age": "300ms"},
                         iceberg_batch={"max_rows": 20000, "max_age": "1500ms"})
    # A replacement owns the partitions once the killed member's session has expired.
    cycle = RESTART_DELAY + SESSION_TIMEOUT + 2 + max_uptime / 2
    producer = BackgroundProducer(topic, total, rate=total / (kills * cycle))
    logs = lambda: log_report(setup.processes)  # noqa: E731
    note(f"seed {seed}: {kills} kills over {total} events, {partitions} partitions, "
         f"producing at {producer.rate:.0f}/s, restart after {RESTART_DELAY}s")
    started = time.time()
    producer.start()
    history = []
    for k in range(kills):
        inst = start(setup, route)
        inst_started = time.time()
        # One kill in five hits start-up: recovery reads, joining the group.
        early = rng.random() < 0.2
        if early:
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            inst.wait_ready(60)
            wait_assignment([inst], partitions, f"restart {k}: the only instance owns every partition",
                            timeout=45, logs=logs)
            time.sleep(rng.uniform(0.3, max_uptime))
        assert alive(inst), f"restart {k}: the service exited by itself with {inst.proc.returncode}\n{logs()}"
        consumed = inst.metric("ingest_records_consumed_total")
        lived = time.time() - inst_started
        kill9(inst)
        flushes = full_log(inst).count(" flushed ")
        history.append((k, "start-up" if early else "running", lived, consumed, flushes,
                        clickhouse_count(setup.database),
                        iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events"),
                        producer.produced))
        time.sleep(RESTART_DELAY)
    chaos_secs = time.time() - started
    note("kills (n, moment, lived s, consumed, flushes logged, clickhouse rows, iceberg rows, produced): " +
         " ".join(f"{h[0]}:{h[1][0]}:{h[2]:.1f}s:{h[3] if h[3] is None else int(h[3])}:{h[4]}:{h[5]}/{h[6]}/{h[7]}"
                  for h in history))
    idle = [h[0] for h in history if h[1] == "running" and h[2] > 2.5 and not h[4]]
    if idle:
        note(f"instances that ran over 2.5 s without logging a single flush: {idle}")
    if producer.produced >= total:
        note(f"warning: production ended before the last kill ({producer.produced} produced)")

    last = start(setup, route)
    last.wait_ready(60)
    wait_assignment([last], partitions, "the final instance owns every partition", timeout=45, logs=logs)
    finish(setup, note, producer, [last], topic, partitions)
    note(f"{kills} kill -9 in {chaos_secs:.0f}s of chaos, {time.time() - started:.0f}s in all, "
         f"{total} events: exact in ClickHouse and Iceberg")


def test_rebalance_one_three_one_while_producing(setup, capsys):
    """Scale out from one instance to three and back (SIGTERM to two at once, as a
    Deployment scaled in does) while events are produced; both sinks keep growing."""
    note = Notes(capsys, "rebalance")
    partitions = 6
    total, cycles, hold = sizes(rebalance_events=(20_000, 200_000), rebalance_cycles=(1, 3),
                                rebalance_hold=(4.0, 10.0))
    topic = create_topic(unique("chaos_rebalance"), partitions)
    route = events_route(topic, {"max_rows": 4000, "max_age": "500ms"},
                         iceberg_batch={"max_age": "1500ms"})
    producer = BackgroundProducer(topic, total, rate=total / (cycles * (2 * hold + 20) + 5))
    logs = lambda: log_report(setup.processes)  # noqa: E731
    counts = counts_of(setup)
    started = time.time()
    producer.start()
    a = start(setup, route)
    a.wait_ready(60)
    wait_assignment([a], partitions, "one instance owns every partition", logs=logs)
    for c in range(cycles):
        b, d = start(setup, route), start(setup, route)
        b.wait_ready(60)
        d.wait_ready(60)
        spread = wait_assignment([a, b, d], partitions, f"cycle {c}: three instances share the partitions",
                                 timeout=60, logs=logs)
        before = counts()
        time.sleep(hold)
        wait_until(f"cycle {c}: both sinks progress while three instances run", grown(counts, before), timeout=30,
                   interval=0.25)
        # Scale in: SIGTERM both at once, as a Deployment scaled from 3 to 1 does.
        codes = stop_together([b, d])
        assert codes == [0, 0], f"cycle {c}: scale-in stops must exit 0, got {codes}\n{logs()}"
        wait_assignment([a], partitions, f"cycle {c}: the remaining instance owns every partition again",
                        timeout=60, logs=logs)
        note(f"cycle {c}: 1 -> 3 (spread {spread}) -> 1 at {counts()}")
        time.sleep(hold / 2)
    finish(setup, note, producer, [a], topic, partitions)
    note(f"{cycles} cycle(s) of 1 -> 3 -> 1 in {time.time() - started:.0f}s over {total} events: exact")


def test_frozen_instance_is_fenced_after_it_wakes(setup, capsys):
    """Two instances; one is frozen (SIGSTOP) past its session timeout while it holds
    rows and possibly a write in flight; the other takes its partitions over; the frozen
    one wakes up (SIGCONT) and must not write what it no longer owns."""
    note = Notes(capsys, "zombie")
    partitions = 4
    total, episodes, frozen_for = sizes(zombie_events=(15_000, 200_000), zombie_episodes=(1, 5),
                                        zombie_freeze=(10.0, 10.0))
    topic = create_topic(unique("chaos_zombie"), partitions)
    frozen = {}
    # Iceberg batches stay open for 2 s: the frozen instance is likely to hold rows (and
    # a write in flight) when it is frozen.
    route = events_route(topic, {"max_rows": 5000, "max_age": "1s"},
                         clickhouse_batch={"max_age": "300ms"}, iceberg_batch={"max_age": "2s"})
    producer = BackgroundProducer(topic, total, rate=total / (episodes * (frozen_for + 15) + 5))
    logs = lambda: log_report(setup.processes)  # noqa: E731
    producer.start()
    # Both at once, as a Deployment with two replicas starts them.
    live = [start(setup, route), start(setup, route)]
    for inst in live:
        inst.wait_ready(60)
    wait_assignment(live, partitions, "two instances share the partitions", timeout=60, logs=logs)
    for e in range(episodes):
        zombie = live[e % len(live)]
        others = [inst for inst in live if inst is not zombie]
        time.sleep(2.5)
        held = assigned(zombie)
        frozen_from = iso_now()
        freeze(zombie)
        frozen_at = time.time()
        try:
            wait_assignment(others, partitions, f"episode {e}: the others take over the frozen instance's "
                            f"partitions", timeout=SESSION_TIMEOUT + 8, each=False, logs=logs)
            took_over = time.time() - frozen_at
            time.sleep(max(0.0, frozen_for - took_over))
        finally:
            thaw(zombie)
            # Until its client has noticed the expired session (milliseconds) and the
            # group has settled, its old spans are the zombie case.
            until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=SESSION_TIMEOUT)
            frozen.setdefault(zombie.log_path.name, []).append(
                (frozen_from, until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
        note(f"episode {e}: {zombie.log_path.name} (owned {held}) frozen {time.time() - frozen_at:.1f}s; "
             f"the others owned all {partitions} after {took_over:.1f}s: {[assigned(i) for i in others]}")
        mark = len(full_log(zombie))

        # Awake, it must find out it lost the partitions, then rejoin or leave cleanly.
        def settled():
            if not alive(zombie):
                return True, f"exited with {zombie.proc.returncode}"
            counts = [assigned(i) for i in live]
            return (None not in counts and sum(counts) == partitions and counts[live.index(zombie)] > 0), counts
        state = wait_until(f"episode {e}: the woken instance rejoins (or exits)", settled, timeout=60, interval=0.25)
        lines = [line for line in full_log(zombie)[mark:].splitlines()
                 if any(w in line.lower() for w in ("fenc", "lost", "refused", "no longer", "revok", "error", "warn",
                                                    "flushed"))]
        note(f"episode {e}: after waking: {state}; its log: " + (" | ".join(lines[-10:]) or "(nothing)"))
        if not alive(zombie):
            code = zombie.proc.returncode
            explained = [line for line in full_log(zombie).splitlines() if "error" in line.lower()]
            assert code == 0 or explained, \
                f"the woken instance exited with {code} without saying why in its log\n{logs()}"
            note(f"episode {e}: the woken instance exited with {code}: {explained[-3:]}")
            live.remove(zombie)
    fenced = grep_logs(setup.processes, r"partitions lost|fenc|no longer assigned|refused this member")
    note(f"fencing lines in all logs ({len(fenced)}): " + " | ".join(fenced[-6:]))
    note("partitions owned by two instances at once (the frozen one's spans included): " +
         ("; ".join(overlaps(setup.processes)) or "none"))
    gates = grep_logs(setup.processes, r"insert gate|took these partitions|started writing these partitions later")
    note(f"ClickHouse insert gate lines ({len(gates)}): " + " | ".join(gates[-6:]))
    violations = broker_overlaps(setup.processes, frozen)
    if violations:
        # Kafka's group protocol rules this out (Tansu 0.6 did it). The insert gates
        # keep ClickHouse exact regardless, so the comparison below is the same.
        note(f"BROKER: partitions owned by two running instances at once: {violations}")
    finish(setup, note, producer, [p for p in live if alive(p)], topic, partitions)
    note("exit codes: " + ", ".join(f"{p.log_path.name}: {p.proc.returncode}" for p in setup.processes))


def rss_mib(inst):
    """The instance's resident memory (VmRSS), in MiB."""
    for line in open(f"/proc/{inst.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ride_out_outage(inst, outage, counts, other):
    """While a sink is down (just stopped): waits for /ready 503, samples /ready, the
    `other` sink's count and the instance's memory until `outage` seconds have passed.
    Returns (down_at, seconds until 503, /ready statuses, (other before, other after),
    longest time the other sink did not grow, peak RSS in MiB)."""
    down_at = time.time()
    wait_ready_status(inst, 503, 30, "/ready 503 while a sink is down")
    unready_after = time.time() - down_at
    before = last = counts()[other]
    grew_at, longest, peak = time.time(), 0.0, rss_mib(inst)
    statuses = []
    while time.time() - down_at < outage:
        statuses.append(inst.get("/ready")[0])
        now = counts()[other]
        if now != last:
            last, grew_at = now, time.time()
        longest = max(longest, time.time() - grew_at)
        peak = max(peak, rss_mib(inst))
        time.sleep(0.5)
    return down_at, unready_after, statuses, (before, counts()[other]), longest, peak


def ride_out_sink_outage(setup, note, *, name, other, stop, start_again, topic, route, total, outage,
                         catalog=None, iceberg=None, tail=lambda: "", max_stall=None, rss_bound_mib=None):
    """One instance consumes while events are produced; `stop()` takes a sink's server
    (`name`) away for `outage` seconds, then `start_again()`. Meanwhile /ready must be 503
    and the `other` sink must keep growing (never pausing longer than `max_stall` s, and
    with the instance's memory within `rss_bound_mib`, when given); afterwards /ready 200
    and both sinks exact."""
    partitions = 4
    producer = BackgroundProducer(topic, total, rate=total / (outage + 30))
    logs = lambda: log_report(setup.processes) + tail()  # noqa: E731
    counts = counts_of(setup, iceberg)
    producer.start()
    inst = start(setup, route, **({"catalog": catalog} if catalog else {}))
    inst.wait_ready(60)
    wait_assignment([inst], partitions, "the instance owns every partition", logs=logs)
    wait_until("rows in both sinks before the outage", grown(counts, {"clickhouse": 0, "iceberg": 0}), timeout=60,
               interval=0.25)
    note(stop())
    try:
        down_at, unready_after, statuses, grew, stalled, peak = ride_out_outage(inst, outage, counts, other)
    finally:
        note(start_again())
    back_at = time.time()
    note(f"{name} down {back_at - down_at:.1f}s; /ready 503 after {unready_after:.1f}s; "
         f"/ready while down: {sorted(set(statuses))}; {other} {grew[0]} -> {grew[1]} rows meanwhile, "
         f"longest pause {stalled:.1f}s; peak RSS {peak:.0f} MiB")
    assert set(statuses) == {503}, f"/ready must stay 503 while the {name} is down: {statuses}\n{logs()}"
    assert grew[1] > grew[0], f"{other} did not grow while the {name} was down ({grew})\n{logs()}"
    if max_stall is not None:
        assert stalled <= max_stall, f"{other} stopped for {stalled:.0f}s while the {name} was down\n{logs()}"
    if rss_bound_mib is not None:
        assert peak <= rss_bound_mib, f"RSS peaked at {peak:.0f} MiB while the {name} was down\n{logs()}"
    wait_ready_status(inst, 200, 90, f"/ready 200 once the {name} is back")
    note(f"/ready 200 again {time.time() - back_at:.1f}s after the {name} was back")
    finish(setup, note, producer, [inst], topic, partitions, iceberg=iceberg, extra=tail())


def test_clickhouse_outage_iceberg_keeps_its_pace(setup, capsys):
    """Issue 10, item 8: a failing sink never holds back the healthy one, with bounded
    memory. ClickHouse's lane holds at most 5,000 rows; the outage brings far more: once
    its lane holds twice its limits it sheds its rows and reads them again from its own
    positions when ClickHouse is back (before, Iceberg then stopped for the rest of the
    outage: 148 s of 150 in the user's report)."""
    topic = create_topic(unique("chaos_chdown"), 4)
    route = events_route(topic, {"max_rows": 5000, "max_age": "1s"},
                         clickhouse_batch={"max_rows": 5000, "max_age": "300ms"},
                         iceberg_batch={"max_age": "1s"})
    # Iceberg flushes every second: a pause of 15 s is a stop, not noise. The bound on
    # memory is loose (a lane of 5,000 rows is a few MiB); without shedding the lane
    # grows with the outage.
    ride_out_sink_outage(setup, Notes(capsys, "clickhouse-outage"), name="ClickHouse server", other="iceberg",
                         stop=lambda: clickhouse_service("stop"), start_again=lambda: clickhouse_service("start"),
                         topic=topic, route=route, total=size("ch_outage_events", 20_000, 300_000),
                         outage=size("ch_outage_secs", 30.0, 300.0, float), max_stall=15.0, rss_bound_mib=256)


# Iceberg's backlog may grow to twice its max_rows while its store is away.
ICEBERG_OUTAGE_ROUTE = dict(batch={"max_rows": 5000, "max_age": "1s"}, clickhouse_batch={"max_age": "300ms"},
                            iceberg_batch={"max_rows": 60000, "max_age": "1s"})


@contextlib.contextmanager
def fixture_catalog(setup, tmp_path, *fault_args):
    """The REST catalog fixture (faults chosen by `fault_args`) as the test's Iceberg
    catalog, stopped when the test ends."""
    catalog = RestCatalogProcess(tmp_path, free_port(), list(fault_args))
    catalog.start()
    try:
        setup.warehouse = catalog.warehouse
        yield catalog
    finally:
        catalog.stop()


def test_catalog_outage_clickhouse_keeps_its_pace(setup, capsys, tmp_path):
    """The REST catalog alone goes away (the fixture process, its files kept)."""
    with fixture_catalog(setup, tmp_path) as catalog:
        topic = create_topic(unique("chaos_catdown"), 4)
        ride_out_sink_outage(setup, Notes(capsys, "catalog-outage"), name="catalog", other="clickhouse", stop=lambda: catalog.stop() or "catalog stopped",
                             start_again=lambda: catalog.start() or "catalog started",
                             topic=topic, route=events_route(topic, **ICEBERG_OUTAGE_ROUTE),
                             total=size("catalog_outage_events", 20_000, 100_000),
                             outage=size("catalog_outage_secs", 10.0, 30.0, float),
                             catalog={"type": "rest", "uri": catalog.uri},
                             iceberg=lambda: catalog.table(f"{setup.namespace}.events"),
                             tail=lambda: "\n----- REST catalog -----\n" + catalog.tail())


def test_object_store_outage_clickhouse_keeps_its_pace(setup, capsys):
    """SeaweedFS (the S3 store and the Iceberg REST catalog on it) stopped mid-run and
    started again on the same data: Iceberg writes fail meanwhile, /ready is 503,
    ClickHouse keeps writing, and afterwards both sinks hold every event once."""
    topic = create_topic(unique("chaos_s3down"), 4)
    ride_out_sink_outage(setup, Notes(capsys, "object-store-outage"), name="object store", other="clickhouse", stop=lambda: lake.seaweedfs_service("stop"),
                         start_again=lambda: lake.seaweedfs_service("start"),
                         topic=topic, route=events_route(topic, **ICEBERG_OUTAGE_ROUTE),
                         total=size("store_outage_events", 20_000, 100_000),
                         outage=size("store_outage_secs", 10.0, 30.0, float),
                         catalog=lake.rest_catalog_config(),
                         iceberg=lambda: lake.load_table(f"{setup.namespace}.events"))


def test_catalog_commit_reply_lost_after_the_commit(setup, capsys, tmp_path):
    """The REST catalog applies a commit and then answers 500 (every 3rd commit): the
    commit's outcome is unknown to the service. Its retry must find the commit already in
    the table (by the positions it recorded) and not add the files again. The fixture
    injects the fault; catalog, tables and files are real."""
    note = Notes(capsys, "commit-reply-lost")
    partitions = 4
    total = size("lost_reply_events", 20_000, 100_000)
    with fixture_catalog(setup, tmp_path, "--lose-commit-reply-every", "3") as catalog:
        topic = create_topic(unique("chaos_lostreply"), partitions)
        route = events_route(topic, {"max_rows": 5000, "max_age": "1s"},
                             clickhouse_batch={"max_age": "300ms"}, iceberg_batch={"max_age": "500ms"})
        iceberg = lambda: catalog.table(f"{setup.namespace}.events")  # noqa: E731
        # Produce only once the service reads: 20 s of events in small commits, so the
        # fault hits several of them.
        inst = start(setup, route, catalog={"type": "rest", "uri": catalog.uri})
        inst.wait_ready(60)
        producer = BackgroundProducer(topic, total, rate=total / 20)
        producer.start()
        injected = lambda: catalog.log_path.read_text().count("INJECTED:")  # noqa: E731
        wait_until("the fault injected twice while producing",
                   lambda: (injected() >= 2 or not producer.is_alive(), injected()), timeout=60, interval=0.25)
        finish(setup, note, producer, [inst], topic, partitions, iceberg=iceberg,
               extra="----- REST catalog -----\n" + catalog.tail())
        lost = injected()
        note(f"{lost} commit replies lost after the commit was applied")
        assert lost >= 2, f"the fault was injected {lost} times\n{catalog.tail()}"


def test_catalog_tokens_expire_while_producing(setup, capsys, tmp_path):
    """The REST catalog's OAuth2 tokens expire every few seconds (the fixture's
    --token-ttl; SeaweedFS's last an hour, Polaris's and others' expire too) and every
    call with an expired one is answered 401 NotAuthorizedException; every 7th commit
    finds its token expired (refused, not applied). The service, given client
    credentials (`credential`), must fetch a new token and go on: no write stuck
    retrying, /ready 200 at the end, both sinks exact."""
    note = Notes(capsys, "token-expiry")
    partitions = 4
    total, ttl, producing = sizes(token_events=(20_000, 100_000), token_ttl=(4, 4), token_secs=(24.0, 60.0))
    credential = "ingest-test:token-fixture-secret"
    with fixture_catalog(setup, tmp_path, "--token-ttl", str(ttl), "--client-credential", credential,
                         "--expire-tokens-before-commit-every", "7") as catalog:
        topic = create_topic(unique("chaos_token"), partitions)
        route = events_route(topic, {"max_rows": 5000, "max_age": "1s"},
                             clickhouse_batch={"max_age": "300ms"}, iceberg_batch={"max_age": "1s"})
        iceberg = lambda: catalog.table(f"{setup.namespace}.events")  # noqa: E731
        counts = counts_of(setup, iceberg)
        log = lambda: catalog.log_path.read_text()  # noqa: E731
        logs = lambda: log_report(setup.processes) + "\n----- REST catalog -----\n" + catalog.tail()  # noqa: E731
        inst = start(setup, route, catalog={"type": "rest", "uri": catalog.uri,
                                            "properties": {"credential": credential}})
        inst.wait_ready(60)
        producer = BackgroundProducer(topic, total, rate=total / producing)
        producer.start()
        producer.join(producing + 120)
        # Writes every second over tokens living `ttl` seconds: many expire on the way.
        shortfall = drain("after the last token expiry", counts, total, 60)
        text = log()
        issued, refused = text.count(" issued, valid "), text.count("  REFUSED: ")
        at_commit = text.count("INJECTED: every token expired before table commit")
        note(f"{issued} tokens issued, {refused} calls refused with an expired token ({at_commit} of them "
             f"commits); counts {counts()}")
        assert not shortfall, f"{shortfall}\n{logs()}"
        assert refused > at_commit >= 1 and issued >= 3, \
            f"tokens did not expire while producing ({issued} issued, {refused} refused, {at_commit} at a commit)" \
            f"\n{logs()}"
        wait_ready_status(inst, 200, 30, "/ready 200 with fresh tokens")
        finish(setup, note, producer, [inst], topic, partitions, iceberg=iceberg,
               extra="----- REST catalog -----\n" + catalog.tail())


def refusals(setup, code):
    """Inserts the ClickHouse server refused with `code`, per the service's retry lines."""
    return len(grep_logs(setup.processes, rf"sink write failed.*\bCode: {code}\b"))


def test_insert_refusal_storms_lose_nothing(setup, capsys):
    """ClickHouse refuses inserts while pushing the rows from the writer's gate into the
    table: "Too many parts" (code 252) from a table whose user set a small
    `parts_to_throw_insert`, storming while its merges are stopped and after they run
    again, and MEMORY_LIMIT_EXCEEDED (code 241) from an instance configured with a
    `clickhouse.settings.max_memory_usage` its inserts cannot fit in, stopped (SIGTERM, or
    kill -9 in every second cycle) while it retries and replaced by one without the limit.
    Before the fix the gate's ledger view recorded positions the table never got: refused
    rows were skipped as a replay. Iceberg writes throughout; both sinks end exact."""
    note = Notes(capsys, "refusal-storms")
    partitions = 4
    total, cycles, stopped_for, merging_for, memory_for = sizes(
        refusal_events=(20_000, 200_000), refusal_cycles=(1, 3), refusal_merges_stopped_secs=(8.0, 20.0),
        refusal_merges_running_secs=(8.0, 20.0), refusal_memory_secs=(8.0, 20.0))
    # 32 MiB: writing a part of the events table needs more (buffers per column stream).
    memory_limit = size("refusal_max_memory_usage", 32 << 20, 32 << 20)
    db = setup.database
    topic = create_topic(unique("chaos_refusals"), partitions)
    route = events_route(topic, {"max_rows": 5000, "max_age": "1s"},
                         clickhouse_batch={"max_age": "300ms"}, iceberg_batch={"max_age": "1s"})
    logs = lambda: log_report(setup.processes)  # noqa: E731
    # The service makes the table; the user remakes it with limits that refuse inserts early.
    maker = start(setup, route)
    maker.wait_ready(60)
    assert maker.stop() == 0, logs()
    with_table_settings(db, "events", "parts_to_throw_insert = 6, parts_to_delay_insert = 4, max_delay_to_insert = 1")
    merger = Merger(f"{db}.events")
    merger.start()
    merger.run_merges()
    counts = counts_of(setup)
    producer = BackgroundProducer(topic, total,
                                  rate=total / (cycles * (stopped_for + merging_for + memory_for + 5) + 5))
    started = time.time()
    producer.start()
    inst = start(setup, route)
    inst.wait_ready(60)
    wait_assignment([inst], partitions, "the instance owns every partition", logs=logs)
    history = []
    try:
        for c in range(cycles):
            wait_until(f"cycle {c}: both sinks grow", grown(counts, counts()), timeout=30, interval=0.25)
            # Too many parts: merges stopped until inserts are refused, and a while longer.
            before = refusals(setup, 252)
            merger.stop_merges()
            stopped_at = time.time()
            wait_until(f"cycle {c}: inserts refused with 'Too many parts'",
                       lambda: (refusals(setup, 252) > before, refusals(setup, 252)), timeout=30, interval=0.25)
            time.sleep(max(0.0, stopped_for - (time.time() - stopped_at)))
            merger.run_merges()
            time.sleep(merging_for)
            # The refused insert may still sit in its backoff (up to 30 s, longer than
            # `merging_for` at full size): a stop now would give it up (exit 1, by design).
            wait_until(f"cycle {c}: ClickHouse takes rows again once merges run",
                       grown(counts, counts()), timeout=60, interval=0.25)
            parts = refusals(setup, 252) - before
            # Memory limit: an instance whose every insert is refused while it is pushed
            # into the table, stopped while it retries.
            assert alive(inst), f"cycle {c}: the instance exited with {inst.proc.returncode}\n{logs()}"
            code = inst.stop()
            assert code == 0, f"cycle {c}: a clean stop must exit 0, got {code}\n{logs()}"
            limited = start(setup, route, clickhouse_settings={"max_memory_usage": str(memory_limit)})
            wait_until(f"cycle {c}: inserts refused with MEMORY_LIMIT_EXCEEDED",
                       lambda: (alive(limited) and "Code: 241" in full_log(limited), refusals(setup, 241)),
                       timeout=60, interval=0.25)
            time.sleep(memory_for)
            memory = len(re.findall(r"sink write failed.*\bCode: 241\b", full_log(limited)))
            if c % 2:
                kill9(limited)
                ended = "kill -9"
            else:
                ended = f"SIGTERM, exit {limited.stop()}"
            inst = start(setup, route)
            inst.wait_ready(60)
            wait_assignment([inst], partitions, f"cycle {c}: the replacement owns every partition", logs=logs)
            history.append(f"cycle {c}: {parts} 'Too many parts' refusals, {memory} memory-limit refusals "
                           f"(limited instance ended by {ended}), at {counts()}")
            note(history[-1])
        finish(setup, note, producer, [inst], topic, partitions,
               extra=f"{merger.optimized} OPTIMIZE FINAL; errors {merger.errors[-3:]}\n" + "\n".join(history))
    finally:
        merger.halt()
    too_many, memory = refusals(setup, 252), refusals(setup, 241)
    note(f"{cycles} cycle(s), {total} events in {time.time() - started:.0f}s: {too_many} inserts refused with "
         f"'Too many parts' (252), {memory} with MEMORY_LIMIT_EXCEEDED (241), {merger.optimized} OPTIMIZE FINAL: "
         f"exact in ClickHouse and Iceberg")
    assert too_many >= cycles and memory >= cycles, (too_many, memory)


def test_clickhouse_killed_with_sigkill_during_inserts(setup, capsys):
    """The ClickHouse server is killed with SIGKILL (no shutdown) while it runs one of the
    service's inserts (seen in system.processes), and started again on its data right away
    with deploy/local/up.sh, several times. The table is partitioned, so an insert commits
    a part per table partition one after another and a kill may leave some committed
    without a ledger entry; the retry finds them in the parts written since the entry and
    skips them. A kill that lands after the insert ended (the service logs no insert cut
    by a network error) does not count: kills go on until `ch_kills` landed mid-insert
    (at most twice as many in all). The server is shared by the whole stack: other tests
    using it meanwhile fail."""
    note = Notes(capsys, "clickhouse-sigkill")
    partitions = 4
    total, kills, gap = sizes(ch_kill_events=(30_000, 300_000), ch_kills=(3, 20), ch_kill_gap_secs=(2.0, 3.0))
    db = setup.database
    topic = create_topic(unique("chaos_chkill"), partitions)
    route = events_route(topic, {"max_rows": 5000, "max_age": "1s"},
                         clickhouse_batch={"max_age": "500ms"}, iceberg_batch={"max_age": "1s"})
    # 16 table partitions: an insert writes 16 parts, long enough to be caught running.
    route["clickhouse"]["partition_by"] = "event_id % 16"
    logs = lambda: log_report(setup.processes)  # noqa: E731
    counts = counts_of(setup)
    # A kill, the restart (about 2 s) and the service's first retries take about 4 s.
    producer = BackgroundProducer(topic, total, rate=total / (kills * (gap + 4) + 5))
    started = time.time()
    producer.start()
    inst = start(setup, route)
    inst.wait_ready(60)
    wait_assignment([inst], partitions, "the instance owns every partition", logs=logs)
    # An insert cut by the kill; a retry meeting the server down fails to connect instead.
    cut = re.compile(r"^(\S+Z)\s.*sink write failed.*insert failed: network error: (?!client error \(Connect\))")
    replay = re.compile(r"^(\S+Z)\s.*rows already in the table \(a replay\).*sink=clickhouse.*skipped=(\d+)")
    kill_times, notes = [], []
    landed = 0
    try:
        while landed < kills and len(kill_times) < 2 * kills:
            k = len(kill_times)
            wait_until(f"kill {k}: both sinks grow", grown(counts, counts()), timeout=90, interval=0.25)
            time.sleep(gap)
            running = wait_until(f"kill {k}: an insert into {db} running",
                                 lambda: (bool(ids := running_inserts(db)), ids), timeout=30, interval=0.002)
            kill_times.append(iso_now())
            try:
                pid = kill9_clickhouse_server()
                down = time.time()
            finally:
                restarted = clickhouse_service("start")
            back = time.time() - down
            time.sleep(0.5)
            cuts = [m.string for m in map(cut.match, full_log(inst).splitlines()) if m and m.group(1) >= kill_times[-1]]
            landed += bool(cuts)
            notes.append(f"kill {k}: pid {pid} while it ran insert {running[0][:8]}: "
                         f"{cuts[0].split('insert failed: ')[1].split(' retry_in_ms')[0] if cuts else 'no insert cut (it had ended)'}; "
                         f"server back after {back:.1f}s ({restarted.splitlines()[-1][:70]})")
            note(notes[-1])
        assert landed == kills, f"only {landed} of {len(kill_times)} kills landed during an insert\n" + "\n".join(notes)
        finish(setup, note, producer, [inst], topic, partitions, extra="\n".join(notes))
    finally:
        # Whatever happened, the shared server is left running.
        clickhouse_service("start")
    # Rows of a cut insert that the server had committed, found by the retry.
    found = [0] * len(kill_times)
    for m in map(replay.match, full_log(inst).splitlines()):
        if m and m.group(1) >= kill_times[0]:
            found[max(i for i, t in enumerate(kill_times) if t <= m.group(1))] += int(m.group(2))
    note(f"{len(kill_times)} SIGKILLs of the ClickHouse server ({landed} during an insert); rows of cut inserts "
         f"found committed by the retry, per kill: {found}; {total} events in {time.time() - started:.0f}s: "
         f"exact in ClickHouse and Iceberg")
