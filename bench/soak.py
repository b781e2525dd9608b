"""`make soak`: the service (ClickHouse + Iceberg, variant (d) of `make bench`) fed live
at half of its maximum rate for a long run, sampling its memory, CPU and lag, then
checking every produced event landed once in each sink.

The maximum rate is (d)'s median in bench/results/latest.json unless --rate says
otherwise. Not run in CI (it takes --minutes plus the catch-up). Writes
bench/results/soak-latest.{json,md,png}: the RSS curve is the point (issue 19: flat over
30 minutes), lag and CPU beside it show the load was held.

The topic keeps only a few minutes of data (a 30-minute run at 50 % writes tens of GB):
if the service fell that far behind, Kafka would delete what it had not read, the sinks
would report the gap as lost, and the final count here would say so.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402  (the bench's helpers: config, produce, counts)

SAMPLE_SECONDS = 5
RETENTION_MS = 15 * 60 * 1000


def create_short_lived_topic(name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": h.KAFKA})
    topic = NewTopic(name, partitions, 1, config={"retention.ms": str(RETENTION_MS), "segment.ms": "60000"})
    admin.create_topics([topic])[name].result(30)


def delete_topic(name):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": h.KAFKA})  # kept alive until the answer
    admin.delete_topics([name])[name].result(30)


def proc_sample(pid):
    """(RSS MiB, CPU seconds) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kib / 1024, cpu


def default_rate():
    latest = h.ROOT / "bench/results/latest.json"
    try:
        return int(json.loads(latest.read_text())["summary"]["d"]["events_per_s"] * 0.5)
    except (OSError, KeyError, ValueError):
        return 100_000


def slope_mib_per_10min(samples):
    """Least-squares slope of RSS over the second half of the run (after warm-up)."""
    pts = samples[len(samples) // 2:]
    if len(pts) < 2:
        return 0.0
    xs = [p["t"] for p in pts]
    ys = [p["rss_mib"] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 600


def plot(result, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    s = result["samples"]
    minutes = [p["t"] / 60 for p in s]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(minutes, [p["rss_mib"] for p in s], color="tab:blue")
    ax1.axhline(512, color="tab:red", linestyle="--", linewidth=1, label="512 MiB target")
    ax1.set_ylabel("RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="lower right")
    ax1.set_title(f"Soak: {result['rate']:,} events/s for {result['minutes']} min, ClickHouse + Iceberg")
    ax2.plot(minutes, [p["lag_clickhouse"] for p in s], label="ClickHouse", color="tab:orange")
    ax2.plot(minutes, [p["lag_iceberg"] for p in s], label="Iceberg", color="tab:green")
    ax2.set_ylabel("behind: produced (at the set rate) − held")
    ax2.set_xlabel("minutes")
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=int, default=None, help="events/s (default: half of (d) in latest.json)")
    p.add_argument("--out", default=str(h.ROOT / "bench/results"))
    a = p.parse_args()
    rate = a.rate or default_rate()
    count = int(rate * a.minutes * 60)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    topic = f"soak-{stamp}"
    database = f"soak_{uuid.uuid4().hex[:8]}"
    work = h.STATE / "bench" / "soak" / database
    work.mkdir(parents=True)
    create_short_lived_topic(topic, 4)
    config = h.ingest_config(work, topic, ("clickhouse", "iceberg"), database)
    h.log(f"soak: {rate:,} events/s for {a.minutes} min ({count:,} events) into {database}")
    service = subprocess.Popen([str(h.BIN), "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=open(work / "service.log", "wb"))
    producer_done = threading.Event()
    produced_at = {}

    def produce():
        produced_at["start"] = time.time()
        h.produce(topic, count, rate=rate, live_time=True)
        produced_at["end"] = time.time()
        producer_done.set()

    samples = []
    catalog = work / "catalog.db"
    table = f"{database}.events"
    try:
        time.sleep(3)  # created its tables and joined the group
        threading.Thread(target=produce, daemon=True).start()
        t0 = time.time()
        deadline = t0 + a.minutes * 60 + 600
        while time.time() < deadline:
            if service.poll() is not None:
                raise RuntimeError(f"the service exited with {service.returncode}: see {work / 'service.log'}")
            t = time.time() - t0
            rss, cpu = proc_sample(service.pid)
            produced = count if producer_done.is_set() else min(count, int(rate * t))
            in_ch = h.ch_rows_held(database, "events")
            in_ice = h.iceberg_rows(catalog, table)
            samples.append({"t": round(t, 1), "rss_mib": round(rss, 1), "cpu_s": round(cpu, 2),
                            "lag_clickhouse": max(produced - in_ch, 0), "lag_iceberg": max(produced - in_ice, 0)})
            if len(samples) % 12 == 0:
                h.log(f"  {t / 60:5.1f} min  rss {rss:6.1f} MiB  cpu {cpu:7.1f} s  "
                      f"behind: clickhouse {samples[-1]['lag_clickhouse']:,}  iceberg {samples[-1]['lag_iceberg']:,}")
            if producer_done.is_set() and in_ch >= count and in_ice >= count:
                break
            time.sleep(SAMPLE_SECONDS)
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(120)
        except subprocess.TimeoutExpired:
            service.kill()
    achieved = count / max(produced_at.get("end", time.time()) - produced_at.get("start", t0), 1e-9)
    ch_rows = h.ch_count(table)
    ch_distinct = int(h.ch(f"SELECT uniqExact(event_id) FROM {table}").strip() or 0)
    ice_rows = h.iceberg_rows(catalog, table)
    warm = [s["rss_mib"] for s in samples if s["t"] >= 300] or [s["rss_mib"] for s in samples]
    result = {
        "stamp": stamp, "rate": rate, "achieved_rate": round(achieved), "minutes": a.minutes, "events": count,
        "clickhouse_rows": ch_rows, "clickhouse_distinct_ids": ch_distinct, "iceberg_rows": ice_rows,
        "peak_rss_mib": max(s["rss_mib"] for s in samples),
        "rss_after_5_min_mib": warm[0], "rss_at_end_mib": samples[-1]["rss_mib"],
        "rss_slope_mib_per_10_min": round(slope_mib_per_10min(samples), 1),
        "cpu_seconds": samples[-1]["cpu_s"], "samples": samples,
    }
    h.ch(f"DROP DATABASE IF EXISTS {database}")
    delete_topic(topic)
    subprocess.run(["rm", "-rf", str(work / "warehouse")], check=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak-latest.json").write_text(json.dumps(result, indent=1) + "\n")
    plotted = plot(result, out / "soak-latest.png")
    exact = ch_rows == count and ch_distinct == count and ice_rows == count
    lines = [f"# Soak {stamp}", "",
             f"{count:,} events produced live at {rate:,}/s (achieved {result['achieved_rate']:,}/s) for "
             f"{a.minutes} min into ClickHouse + Iceberg; samples every {SAMPLE_SECONDS} s.", "",
             "| peak RSS MiB | RSS at 5 min | RSS at end | RSS slope, second half (MiB per 10 min) | service CPU s | "
             "ClickHouse rows (distinct ids) | Iceberg rows |", "|---:|---:|---:|---:|---:|---|---:|",
             f"| {result['peak_rss_mib']} | {result['rss_after_5_min_mib']} | {result['rss_at_end_mib']} | "
             f"{result['rss_slope_mib_per_10_min']} | {result['cpu_seconds']} | {ch_rows:,} ({ch_distinct:,}) | {ice_rows:,} |",
             "", "Every event once in each sink." if exact else "**NOT every event exactly once: see the counts.**"]
    if plotted:
        lines += ["", "![RSS and lag over the soak](soak-latest.png)"]
    (out / "soak-latest.md").write_text("\n".join(lines) + "\n")
    h.log("\n".join(lines))
    sys.exit(0 if exact else 1)


if __name__ == "__main__":
    main()
