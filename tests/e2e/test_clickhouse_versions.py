"""What the ClickHouse sink assumes of each server version, shown on the server itself
(18.16, and 26.9 through the chDB stand-in: see conftest). Each difference here is one
the sink handles by `ServerCaps` (sinks/clickhouse/src/types.rs)."""
from conftest import clickhouse, every_clickhouse

LEDGER = ("(topic String, partition Int32, next AggregateFunction(max, Int64), at AggregateFunction(max, DateTime)) "
          "ENGINE = AggregatingMergeTree() ORDER BY (topic, partition)")


def ledger_view(db, name, source):
    return (f"CREATE MATERIALIZED VIEW {db}.{name} TO {db}.ledger AS SELECT _topic AS topic, _partition AS partition, "
            f"maxState(_offset + 1) AS next, maxState(now()) AS at FROM {db}.{source} GROUP BY topic, partition")


def ledger_entries(db, topic):
    return int(clickhouse(f"SELECT count() AS c FROM {db}.ledger WHERE topic = '{topic}'")[0]["c"])


@every_clickhouse
def test_views_of_a_views_target_and_the_gates_ledger_view(setup):
    """Why the sink's ledger is not fed by materialized views (it was before issue 10).
    Rows a gate's view writes into the table fire the table's own views from 19.16 on
    (after the table's part is written), not on 18.16; and a gate's sibling views run in
    name order on 18.16, so a `_ledger` view ran *before* the `_rows` view and a failing
    table insert left an entry for rows the table lacks. The writer now records entries
    itself after the insert is acknowledged, which depends on neither behaviour."""
    db = setup.database
    clickhouse(f"CREATE DATABASE {db}")
    clickhouse(f"CREATE TABLE {db}.t (id Int64, _topic String, _partition Int32, _offset Int64) "
               "ENGINE = MergeTree ORDER BY id")
    clickhouse(f"CREATE TABLE {db}.ledger {LEDGER}")
    clickhouse(ledger_view(db, "t_mv", "t"))
    clickhouse(f"CREATE TABLE {db}.gate AS {db}.t ENGINE = Null")
    # Rows with id >= 100 fail on their way into the table, as an insert failing there
    # would (too many parts, memory, a server going down): a constraint the table gets
    # after the gate copied its columns, or, on 18.16 (no constraints), the view throws.
    old = setup.clickhouse.version == "18.16"
    refuse = " WHERE throwIf(id >= 100) = 0" if old else ""
    clickhouse(f"CREATE MATERIALIZED VIEW {db}.gate_rows TO {db}.t AS SELECT * FROM {db}.gate{refuse}")
    if not old:
        clickhouse(f"ALTER TABLE {db}.t ADD CONSTRAINT refuse CHECK id < 100")

    clickhouse(f"INSERT INTO {db}.gate VALUES (1, 'ok', 0, 7)")
    assert ledger_entries(db, "ok") == (0 if old else 1), "the table's ledger view fires through the gate"
    try:
        clickhouse(f"INSERT INTO {db}.gate VALUES (100, 'refused', 0, 8)")
        raise RuntimeError("the insert was not refused")
    except AssertionError:
        pass
    assert ledger_entries(db, "refused") == 0  # the table's view never runs ahead of it

    # The 18.16 layout: the gate feeds the ledger with a view of its own.
    clickhouse(ledger_view(db, "gate_ledger", "gate"))
    try:
        clickhouse(f"INSERT INTO {db}.gate VALUES (200, 'ahead', 0, 9)")
        raise RuntimeError("the insert was not refused")
    except AssertionError:
        pass
    assert int(clickhouse(f"SELECT count() AS c FROM {db}.t WHERE _topic = 'ahead'")[0]["c"]) == 0
    assert ledger_entries(db, "ahead") == 1, "the gate's _ledger view ran before its _rows view failed"


@every_clickhouse
def test_database_engine_decides_drop_sync(setup):
    """Databases are Atomic from 20.10 on: a dropped table goes away in the background
    unless the DROP says SYNC, which the sink's gate drops do there (18.16: Ordinary, and
    no SYNC)."""
    db = setup.database
    clickhouse(f"CREATE DATABASE {db}")
    engine = clickhouse(f"SELECT engine FROM system.databases WHERE name = '{db}'")[0]["engine"]
    assert engine == ("Ordinary" if setup.clickhouse.version == "18.16" else "Atomic")
    if engine == "Atomic":
        clickhouse(f"CREATE TABLE {db}.g (x Int64) ENGINE = Null")
        clickhouse(f"DROP TABLE IF EXISTS {db}.g SYNC")
        assert clickhouse(f"SELECT name FROM system.tables WHERE database = '{db}'") == []
