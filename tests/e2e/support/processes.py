"""Service instances as child processes, and the faults done to them: SIGKILL,
SIGSTOP/SIGCONT, SIGTERM to one or several at once; waiting for readiness and assignment.
"""
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .stack import BIN


def wait_until(what, predicate, timeout=180, interval=0.5):
    """Polls `predicate() -> (done, last value)` until done; fails with the last value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        ok, last = predicate()
        if ok:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


class Ingest:
    """`ingest run` as a child process, stopped with SIGTERM like Kubernetes does."""

    def __init__(self, config_path, log_path):
        self.config_path = config_path
        self.log_path = log_path
        self.port = json.loads(Path(config_path).read_text())["server"]["listen"].rsplit(":", 1)[1]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([str(BIN), "run", "--config", str(config_path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return None, str(e)

    def wait_ready(self, timeout=60):
        def ready():
            assert self.proc.poll() is None, f"ingest exited early:\n{self.logs()}"
            status, body = self.get("/ready")
            return status == 200, (status, body)
        wait_until("ingest /ready", ready, timeout)

    def metric(self, name):
        """The sum of every sample of `name` (over its labels: routes, sinks); 0 if none,
        None when /metrics does not answer."""
        status, body = self.get("/metrics")
        if status != 200:
            return None
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name + " ") or line.startswith(name + "{"))

    def terminate(self):
        """SIGTERM, once, unless it has exited already."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout=120):
        """Its exit code, after at most `timeout` s (then SIGKILL and a failure with its log)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{Path(self.log_path).name} did not stop within {timeout}s:\n{self.logs()}")
        self.log.close()
        return code

    def stop(self, timeout=120):
        self.terminate()
        return self.wait_stopped(timeout)

    def logs(self):
        if not self.log.closed:
            self.log.flush()
        return Path(self.log_path).read_text()[-5000:]


def alive(ingest):
    return ingest.proc.poll() is None


def kill9(ingest):
    ingest.proc.kill()
    code = ingest.proc.wait(30)
    ingest.log.flush()
    return code


def assigned(ingest):
    """ingest_assigned_partitions of a live instance (None when it does not answer)."""
    if not alive(ingest):
        return None
    value = ingest.metric("ingest_assigned_partitions")
    return None if value is None else int(value)


def wait_assignment(instances, partitions, what, timeout=60, each=True, logs=None):
    """Waits until the live `instances` together own every partition (and each owns at
    least one when `each`); fails with every instance's log otherwise."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for inst in instances:
            assert alive(inst), f"{what}: {inst.log_path.name} exited with {inst.proc.returncode}\n" \
                                f"{logs() if logs else inst.logs()}"
        counts = [assigned(inst) for inst in instances]
        last = counts
        if None not in counts and sum(counts) == partitions and (not each or min(counts) > 0):
            return counts
        time.sleep(0.25)
    raise AssertionError(f"{what}: assignment stuck at {last} (want {partitions} partitions over "
                         f"{len(instances)} instance(s){', each with some' if each else ''}) after {timeout}s\n"
                         f"{logs() if logs else ''}")


def wait_ready_status(ingest, want, timeout, what):
    def check():
        assert alive(ingest), f"{what}: instance exited with {ingest.proc.returncode}\n{ingest.logs()}"
        status, body = ingest.get("/ready")
        return status == want, (status, body[:200])
    return wait_until(what, check, timeout, interval=0.25)


def freeze(ingest):
    os.kill(ingest.proc.pid, signal.SIGSTOP)


def thaw(ingest):
    if alive(ingest):
        os.kill(ingest.proc.pid, signal.SIGCONT)


def stop_together(instances, timeout=120):
    """SIGTERM to every instance at once (one signal each), then their exit codes."""
    for inst in instances:
        inst.terminate()
    return [inst.wait_stopped(timeout) for inst in instances]
