"""Helpers of the end-to-end suites (tests/e2e), one module per job; conftest.py builds
its fixtures from them and the fault-injection suite (test_chaos.py) uses them all.

- stack: the project's paths, the stack's addresses, stopping/starting a stack service
- processes: `ingest run` as a child process (Ingest) and the faults done to instances
- kafka: the ground truth (a background producer, the topic read back, end offsets)
- logs: instances' logs (reports, grep, partition ownership and overlaps)
- clickhouse, iceberg: queries to each sink, its server's faults, its state vs the truth
- compare, verify: the final comparison of every sink with what was produced
- rest_catalog: the fault-injecting REST catalog fixture as a process
- chaos_run: sizes of a fault-injection run (CHAOS=full) and its terminal notes

Faults are real: SIGKILL, SIGSTOP/SIGCONT, SIGTERM of the service, the ClickHouse server
stopped with `deploy/local/down.sh` or killed with SIGKILL mid-insert, inserts the
server refuses (table settings, stopped merges, `max_memory_usage`), the REST catalog
fixture process terminated and started again on the same port. Every difference a
comparison finds is explained: missing/duplicated ids with their partition/offset, the
ClickHouse rows (`_part`) and Iceberg data files holding duplicates, what the broker
answers a fetch at a missing offset, partitions two instances owned at once (from their
rebalance log lines). The broker is Apache Kafka (deploy/local/services/kafka.sh).
"""
import sys
from pathlib import Path

# The independent readers' helpers (tests/readers/readers_common.py: the id checksum)
# are shared by the support modules and the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "readers"))
