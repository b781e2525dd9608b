"""Fixtures of the deployment checks (`make deploy-check`): the chart's renders, the plain
manifests deploy/k8s/, the container image's facts and the `ingest` binary that checks
the config they ship. Offline: no Docker engine, no cluster, no network.

The tools are pinned in tests/deploy/requirements.txt, which deploy/local/install.sh
installs into the stack's venv ($PY); no test installs anything.
Env: K8S_VERSION (default 1.30.0) the Kubernetes version whose schemas and lint rules
apply; INGEST_BIN (default: the newer of target/release/ingest and target/debug/ingest).
"""
import os
import warnings
from collections import namedtuple

import pytest

import chart
from image import Image

K8S_VERSION = os.environ.get("K8S_VERSION", "1.30.0")
K8S_LABEL = chart.rel(chart.K8S)
# Every set of objects a cluster could be given: each chart render and the plain manifests.
OBJECT_SETS = [f"render[{name}]" for name in chart.RENDERED] + [K8S_LABEL]

Manifests = namedtuple("Manifests", "label objects")


@pytest.fixture(scope="session")
def renders():
    """{variant: {template path: text}} of every variant the chart must render."""
    return {name: chart.render(chart.VARIANTS[name][0]) for name in chart.RENDERED}


@pytest.fixture(scope="session")
def object_sets(renders):
    """{label: [objects]}: each render's objects and those of deploy/k8s/."""
    sets = {f"render[{name}]": chart.objects_of(files) for name, files in renders.items()}
    sets[K8S_LABEL] = chart.k8s_objects()
    return sets


@pytest.fixture(params=OBJECT_SETS)
def manifests(request, object_sets):
    """One object set at a time: tests taking it run once per set."""
    return Manifests(request.param, object_sets[request.param])


@pytest.fixture(scope="session")
def image():
    return Image.parse()


@pytest.fixture(scope="session")
def ingest_bin():
    """The service binary (`make test` builds it before this suite runs)."""
    if os.environ.get("INGEST_BIN"):
        return os.environ["INGEST_BIN"]
    found = [p for p in (chart.ROOT / "target/release/ingest", chart.ROOT / "target/debug/ingest") if os.access(p, os.X_OK)]
    assert found, "no target/release/ingest or target/debug/ingest: run `cargo build --release -p ingest` first"
    binary = max(found, key=os.path.getmtime)
    sources = chart.ROOT / "ingest/src/config"
    if sources.is_dir():
        newest = max(os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(sources) for f in fs)
        if newest > os.path.getmtime(binary):
            warnings.warn(f"{chart.rel(binary)} is older than ingest/src/config: rebuild for an exact answer")
    return str(binary)
