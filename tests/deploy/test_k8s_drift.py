"""deploy/k8s/ stays what chart.py writes from the chart's default render (minus the
Helm-only labels and checksum), every file of it is listed in kustomization.yaml, and
`kubectl kustomize` builds exactly those objects."""
import re
import shutil
import subprocess

import pytest

import chart

REGENERATE = f"run `{chart.WRITE_COMMAND}` after changing the chart"


def first_diff(a, b, path=""):
    """Where the chart's object `a` and the file's `b` first differ, in words."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'chart' if k in a else 'file'}"
            if a[k] != b[k]:
                return first_diff(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_diff(x, y, f"{path}[{i}]")
    if isinstance(a, str) and isinstance(b, str):
        la, lb = a.splitlines(), b.splitlines()
        i = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
        return f"{path} line {i + 1}: chart {(la[i] if i < len(la) else '<end>')!r} vs file {(lb[i] if i < len(lb) else '<end>')!r}"
    return f"{path or '.'}: chart {str(a)[:80]!r} vs file {str(b)[:80]!r}"


def test_every_manifest_file_is_listed():
    listed = {p.name for p in chart.k8s_files()[0]}
    unlisted = [f"{chart.rel(chart.K8S)}/{p.name} is not listed in kustomization.yaml"
                for p in sorted(chart.K8S.iterdir())
                if p.name.endswith((".yaml", ".yml")) and p.name != "kustomization.yaml" and p.name not in listed]
    assert not unlisted, "\n".join(unlisted + [REGENERATE])


def test_manifests_equal_the_default_render(object_sets):
    k8s = chart.rel(chart.K8S)
    want = {chart.key(o): chart.normalize(o) for o in object_sets["render[default]"]}
    have = {chart.key(o): o for o in object_sets[k8s]}
    problems = []
    for k in sorted(set(want) | set(have), key=str):
        if k not in have:
            problems.append(f"{k[0]}/{k[1]} is in the chart's render but not in {k8s}")
        elif k not in want:
            problems.append(f"{k[0]}/{k[1]} is in {k8s} but not in the chart's render")
        elif want[k] != have[k]:
            problems.append(f"{k[0]}/{k[1]} differs from the chart's render: {first_diff(want[k], have[k])}")
    assert not problems, "\n".join(problems + [REGENERATE])


def test_kustomize_builds_the_listed_objects(object_sets):
    """kubectl is not part of the stack: where it is installed, its kustomize has the last word."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not found (not installed by deploy/local/install.sh)")
    k8s = chart.rel(chart.K8S)
    p = subprocess.run([kubectl, "kustomize", str(chart.K8S)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, f"kubectl kustomize {k8s}: {' '.join(p.stderr.split())[:300]}"
    built = sorted((chart.key(o) for o in chart.docs(p.stdout)), key=str)
    files = sorted((chart.key(o) for o in object_sets[k8s]), key=str)
    version = re.search(r"Kustomize Version: (\S+)",
                        subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout or "")
    assert set(built) == set(files), \
        f"kubectl kustomize (kustomize {version.group(1) if version else '?'}) output {built} != files {files}"
