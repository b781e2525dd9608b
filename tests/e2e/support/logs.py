"""Reading the service instances' logs: reports for a failure message, grep, and who
owned which partition when (from the rebalance log lines), to explain a difference.
"""
import collections
import datetime
import re
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")

INTERESTING = re.compile(r"WARN|ERROR|panic|fenc|refused|no longer assigned|partitions lost|revok|lost",
                         re.IGNORECASE)


def log_report(processes, tail_lines=40, full_tails=4, interesting_per_log=25):
    """The tail of each instance's log: the last `full_tails` in full, the earlier ones as
    their warning/error lines (a crash loop starts dozens of instances)."""
    out = []
    for n, p in enumerate(processes):
        code = p.proc.poll()
        state = "running" if code is None else f"exit {code}"
        try:
            if not p.log.closed:
                p.log.flush()
            lines = ANSI.sub("", Path(p.log_path).read_text(errors="replace")).splitlines()
        except OSError as e:
            lines = [f"(log unreadable: {e})"]
        if n >= len(processes) - full_tails:
            out.append(f"----- {Path(p.log_path).name} ({state}), last {tail_lines} of {len(lines)} lines -----")
            out.extend(lines[-tail_lines:])
        else:
            picked = [line for line in lines if INTERESTING.search(line)]
            out.append(f"----- {Path(p.log_path).name} ({state}), {len(lines)} lines; "
                       f"{len(picked)} warning/error lines, last {interesting_per_log} -----")
            out.extend(picked[-interesting_per_log:])
    return "\n".join(out)


def grep_logs(processes, pattern):
    rx = re.compile(pattern, re.IGNORECASE)
    hits = []
    for p in processes:
        if not p.log.closed:
            p.log.flush()
        for line in ANSI.sub("", Path(p.log_path).read_text(errors="replace")).splitlines():
            if rx.search(line):
                hits.append(f"{Path(p.log_path).name}: {line}")
    return hits


def full_log(ingest):
    """The instance's whole log without colour codes (Ingest.logs() keeps the last 5000 chars)."""
    if not ingest.log.closed:
        ingest.log.flush()
    return ANSI.sub("", Path(ingest.log_path).read_text(errors="replace"))

EVENT = re.compile(r"^(\S+Z)\s.*rebalance event=(Assigned|Revoked)\((\[.*\])\)")
PART = re.compile(r"([A-Za-z0-9._-]+)/(\d+)")


def ownership(processes):
    """Per instance, the partitions it owned and when, from its rebalance log lines
    (cooperative: `Assigned` adds, `Revoked` removes; the log's end closes what is open):
    [(log name, topic, partition, from, to)] with ISO timestamps."""
    spans = []
    for p in processes:
        text = full_log(p)
        lines = text.splitlines()
        last = next((m.group(0).split()[0] for m in (re.match(r"^\S+Z", line) for line in reversed(lines)) if m), "")
        held = {}
        for line in lines:
            m = EVENT.match(line)
            if not m:
                continue
            at, kind, parts = m.group(1), m.group(2), PART.findall(m.group(3))
            # A format this parser does not know would make every overlap check pass.
            assert parts or m.group(3) == "[]", f"unreadable rebalance line: {line}"
            for topic, part in parts:
                key = (topic, int(part))
                if kind == "Assigned":
                    held.setdefault(key, at)
                elif key in held:
                    spans.append((Path(p.log_path).name, *key, held.pop(key), at))
        spans.extend((Path(p.log_path).name, *key, since, last) for key, since in held.items())
    return spans


def overlapping_spans(processes):
    """Pairs of `ownership` spans in which two instances owned the same partition at once."""
    spans = ownership(processes)
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a[0] != b[0] and a[1:3] == b[1:3] and a[3] < b[4] and b[3] < a[4]:
                yield a, b


def overlaps(processes):
    """Times two instances owned the same partition at once, per their own logs."""
    return [f"p{a[2]}: {a[0]} {a[3][11:23]}..{a[4][11:23]} and {b[0]} {b[3][11:23]}..{b[4][11:23]}"
            for a, b in overlapping_spans(processes)]


def iso_now():
    """Now as the service's log timestamps write it (UTC, microseconds)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def broker_overlaps(processes, frozen):
    """Partitions two instances owned at once *while both were running*: overlaps that
    lie inside a window where one of them was frozen (`frozen`: log name -> [(from, to)]
    ISO times, `to` extended by the time its client needs to notice) are the zombie case
    the service must fence; the rest is the broker handing one partition to two live
    members, which Kafka's group protocol rules out (Tansu 0.6, the broker used before
    Apache Kafka, was seen doing it).
    Returns {partition: [description]}."""
    found = collections.defaultdict(list)
    for a, b in overlapping_spans(processes):
        lo, hi = max(a[3], b[3]), min(a[4], b[4])
        inside = any(f <= lo and hi <= t for name in (a[0], b[0]) for f, t in frozen.get(name, []))
        if not inside:
            found[a[2]].append(f"{a[0]} and {b[0]} from {lo[11:23]} to {hi[11:23]}")
    return dict(found)


def wait_or_report(what, predicate, processes, timeout=180, interval=0.5):
    """`wait_until`, failing with the instances' log report when it times out."""
    from .processes import wait_until
    try:
        return wait_until(what, predicate, timeout, interval)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{log_report(list(processes))}") from None
