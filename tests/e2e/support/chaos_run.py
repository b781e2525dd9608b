"""How a fault-injection run is sized and reported.

Sizes come from the environment: `CHAOS=full` selects the issue's sizes, anything else a
quick run that fits `make test`; every size can also be set on its own with
`CHAOS_<NAME>` (e.g. `CHAOS_CRASH_KILLS=100`).
"""
import json
import os
import sys
import time

MODE = "full" if os.environ.get("CHAOS", "").strip().lower() == "full" else "quick"

# Short sessions so a killed or frozen member loses its partitions quickly.
# CHAOS_KAFKA_PROPERTIES (a JSON object) adds to or overrides them, e.g. to try another
# assignment strategy: '{"partition.assignment.strategy": "range"}'.
KAFKA_PROPERTIES = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000",
                    **json.loads(os.environ.get("CHAOS_KAFKA_PROPERTIES", "{}"))}
SESSION_TIMEOUT = 6.0
# Pause between a SIGKILL and the replacement. 0: the replacement joins while the dead
# member's session still lives, and Kafka hands it the partitions once that expires.
RESTART_DELAY = float(os.environ.get("CHAOS_RESTART_DELAY", "0"))


def size(name, quick, full, kind=int):
    """`CHAOS_<NAME>` if set, else the size of the current mode."""
    value = os.environ.get(f"CHAOS_{name.upper()}")
    if value is not None:
        return kind(value)
    return kind(full if MODE == "full" else quick)


def sizes(**named):
    """`size` of each `name=(quick, full)`, in order (a float quick size reads a float)."""
    return [size(name, quick, full, type(quick)) for name, (quick, full) in named.items()]


class Notes:
    """Lines printed to the terminal even under pytest's capture (results of a run)."""

    def __init__(self, capsys, name):
        self.capsys, self.name = capsys, name
        self.started = time.time()

    def __call__(self, text):
        with self.capsys.disabled():
            sys.stdout.write(f"\n[chaos {MODE} {self.name} +{time.time() - self.started:.0f}s] {text}")
            sys.stdout.flush()
