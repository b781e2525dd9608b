#!/usr/bin/env bash
# Offline static checks of the deployment files (no Docker engine, no cluster needed):
#   deploy/container/Dockerfile, the Helm chart deploy/helm/ingest, the plain manifests
#   deploy/k8s/ (kept equal to the chart's default render), and the service config they
#   ship, checked by the `ingest` binary itself when one is built.
#
#   deploy/check.sh              run every check; one summary line each; exit 1 on failure
#   deploy/check.sh --write-k8s  first regenerate deploy/k8s/ from the chart's default render
#
# Tools (PyPI, pinned; installed once into the project venv $PY from deploy/local/env.sh,
# or into $STACK_HOME/k8s-venv when that venv is missing): helm-python-sdk (Helm v4 Go SDK
# in a wheel: renders and lints the chart without a helm binary), kubernetes-validate
# (bundled Kubernetes JSON schemas), yamllint, dockerfile (BuildKit's Dockerfile parser).
# Env: K8S_VERSION (default 1.30.0) schemas to validate against; INGEST_BIN (default: the
# newer of target/release/ingest and target/debug/ingest).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
# shellcheck source=local/env.sh disable=SC1091
. "$ROOT/deploy/local/env.sh"

MODE="check"
case "${1:-}" in
  "") ;;
  --write-k8s) MODE="write" ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) echo "usage: deploy/check.sh [--write-k8s]" >&2; exit 2 ;;
esac
K8S_VERSION=${K8S_VERSION:-1.30.0}
TOOLS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 yamllint==1.38.0 dockerfile==3.4.0"
IMPORTS="import helm_python, kubernetes_validate, yamllint, dockerfile, yaml"

now() { echo "${EPOCHREALTIME/,/.}"; }
t0=$(now)

# ------------------------------------------------------------------ tools ---
# Python >= 3.11 (tomllib; helm-python-sdk needs 3.10); the project venv when it qualifies.
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
if py_ok "$PY"; then
  CPY=$PY
else
  KVENV=${K8S_VENV:-$STACK_HOME/k8s-venv}
  CPY=$KVENV/bin/python
  if ! py_ok "$CPY"; then
    rm -rf "$KVENV"; mkdir -p "$(dirname "$KVENV")"
    if ! python3 -m venv "$KVENV" >/dev/null 2>&1; then
      # Debian's python3 needs python3-venv for ensurepip.
      { apt-get install -y -q python3-venv || { apt-get update -q && apt-get install -y -q python3-venv; }; } >/dev/null 2>&1
      rm -rf "$KVENV"; /usr/bin/python3 -m venv "$KVENV" || { echo "FAIL tools: cannot create $KVENV" >&2; exit 1; }
    fi
  fi
fi
MARKER=$(dirname "$CPY")/../.deploy-check-tools
if [ "$(cat "$MARKER" 2>/dev/null)" = "$TOOLS" ] && "$CPY" -c "$IMPORTS" >/dev/null 2>&1; then
  TOOLS_NOTE="already installed in $(dirname "$(dirname "$CPY")")"
else
  # shellcheck disable=SC2086
  if ! "$CPY" -m pip install -q --disable-pip-version-check --no-input --progress-bar off $TOOLS >/tmp/deploy-check-pip.log 2>&1 \
     || ! "$CPY" -c "$IMPORTS" >>/tmp/deploy-check-pip.log 2>&1; then
    tail -20 /tmp/deploy-check-pip.log >&2
    printf 'FAIL %-16s %6.2fs  pip install failed (log: /tmp/deploy-check-pip.log)\n' tools "$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')"
    exit 1
  fi
  echo "$TOOLS" >"$MARKER"
  TOOLS_NOTE="installed into $(dirname "$(dirname "$CPY")")"
fi
TOOLS_SECS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{print b-a}')

exec "$CPY" - "$ROOT" "$MODE" "$K8S_VERSION" "$TOOLS" "$TOOLS_NOTE" "$TOOLS_SECS" <<'PYEOF'
import base64, copy, fnmatch, os, posixpath, re, shutil, subprocess, sys, tempfile, time, tomllib
from importlib.metadata import version as pkg_version

import yaml

ROOT, MODE, K8S_VERSION, TOOLS, TOOLS_NOTE, TOOLS_SECS = sys.argv[1:7]
CHART = os.path.join(ROOT, "deploy/helm/ingest")
K8S = os.path.join(ROOT, "deploy/k8s")
DOCKERFILE = os.path.join(ROOT, "deploy/container/Dockerfile")
RELEASE = "ingest"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
HELM_ONLY_ANNOTATIONS = ("checksum/config",)

results = []


class Fail(Exception):
    """A check found problems (its args are the problem lines)."""


class Skip(Exception):
    pass


def run_check(name, fn):
    start = time.monotonic()
    problems = []
    try:
        detail, status = fn(), "PASS"
    except Skip as e:
        detail, status = str(e), "SKIP"
    except Fail as e:
        problems = [str(p) for p in e.args]
        detail, status = f"{len(problems)} problem(s)", "FAIL"
    except Exception as e:  # a bug or a tool error is a failure too
        detail, status = f"{type(e).__name__}: {' '.join(str(e).split())}", "FAIL"
    secs = time.monotonic() - start
    results.append(status)
    print(f"{status} {name:<16} {secs:6.2f}s  {detail}", flush=True)
    for p in problems:
        print(f"     - {p}", flush=True)


def fail_if(problems):
    if problems:
        raise Fail(*problems)


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rel(path):
    return os.path.relpath(path, ROOT)


# ---------------------------------------------------------------- renders ---
import helm_python as helm  # noqa: E402

DEFAULT_VALUES = yaml.safe_load(read(os.path.join(CHART, "values.yaml")))
config_text = "# config given as text (replaces the default config wholesale)\n" + yaml.safe_dump(
    {**DEFAULT_VALUES["config"], "server": {"listen": "0.0.0.0:9500"}}, sort_keys=False)
# name -> (values, expect_error_substring or None)
VARIANTS = {
    "default": ({}, None),
    "scaled": ({
        "replicaCount": 3,
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "secret": {"create": False, "existingSecret": "ingest-credentials"},
        "podDisruptionBudget": {"minAvailable": 2},
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {"repository": "registry.example.com/ingest", "tag": "1.2.3"},
        "env": [{"name": "KAFKA_BROKERS", "value": "kafka-0.kafka:9092,kafka-1.kafka:9092"}],
        "envFrom": [{"configMapRef": {"name": "ingest-extra", "optional": True}}],
        "podAnnotations": {"example.com/team": "data"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "ingest"}}}],
        "logJson": False,
    }, None),
    "config-as-text": ({"config": config_text}, None),
    "sqlite-scaled": ({"replicaCount": 2, "config": {"iceberg": {"catalog": {"uri": "sqlite:///var/lib/ingest/catalog.db"}}}},
                      "SQLite Iceberg catalog only works with replicaCount: 1"),
}
renders = {}  # name -> {"files": {template: text}, "objects": [obj]}


def render(values):
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or None, name=RELEASE, namespace="default")


def objects_of(files):
    out = []
    for path in sorted(files):
        if path.endswith("NOTES.txt"):
            continue
        for d in docs(files[path]):
            out.append(d)
    return out


def check_helm_lint():
    report = helm.lint(CHART, strict=True, kube_version=f"v{K8S_VERSION}")
    problems = [f"{m.get('path')}: {m.get('error')}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += report.get("errors") or []
    fail_if(problems)
    infos = [m.get("error") for m in report.get("messages", []) if m.get("severity", 0) < 2]
    return f"helm lint --strict (Helm SDK {helm.helm_sdk_version()}, kube {K8S_VERSION}): ok" + (f"; info: {', '.join(infos)}" if infos else "")


def check_helm_render():
    problems, counts = [], []
    for name, (values, expect) in VARIANTS.items():
        try:
            files = render(values)
        except helm.HelmError as e:
            if expect and expect in str(e):
                counts.append(f"{name}: refused as expected")
            else:
                problems.append(f"{name}: render failed: {' '.join(str(e).split())}")
            continue
        if expect:
            problems.append(f"{name}: rendered, but should fail with '{expect}'")
            continue
        objs = objects_of(files)
        renders[name] = {"files": files, "objects": objs}
        counts.append(f"{name}: {len(objs)} objects")
    fail_if(problems)
    return f"Helm SDK {helm.helm_sdk_version()} via helm-python-sdk {pkg_version('helm-python-sdk')}; " + "; ".join(counts)


# -------------------------------------------------------------- plain k8s ---
def normalize(obj):
    """The chart's object as the plain manifests carry it: no Helm-only labels/annotations."""
    o = copy.deepcopy(obj)
    metas = [o.get("metadata")]
    tmpl = (o.get("spec") or {}).get("template")
    if isinstance(tmpl, dict):
        metas.append(tmpl.get("metadata"))
    for meta in metas:
        if not isinstance(meta, dict):
            continue
        for label in HELM_ONLY_LABELS:
            (meta.get("labels") or {}).pop(label, None)
        if isinstance(meta.get("annotations"), dict):
            for a in HELM_ONLY_ANNOTATIONS:
                meta["annotations"].pop(a, None)
            if not meta["annotations"]:
                del meta["annotations"]
    return o


def key(obj):
    return (obj.get("kind"), (obj.get("metadata") or {}).get("name"))


class BlockDumper(yaml.SafeDumper):
    pass


def _str_rep(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


BlockDumper.add_representer(str, _str_rep)
KIND_FILES = {"ServiceAccount": "serviceaccount.yaml", "Secret": "secret.yaml", "ConfigMap": "configmap.yaml",
              "Service": "service.yaml", "Deployment": "deployment.yaml", "PodDisruptionBudget": "poddisruptionbudget.yaml"}
HEADER = ("# Generated from the Helm chart deploy/helm/ingest (default values, release `ingest`) by\n"
          "# `deploy/check.sh --write-k8s`; deploy/check.sh fails when the two differ. Change the chart,\n"
          "# then regenerate. Apply with `kubectl apply -k deploy/k8s` (kustomization.yaml lists the files).\n")


def write_k8s():
    files = render({})
    objs = [normalize(o) for o in objects_of(files)]
    os.makedirs(K8S, exist_ok=True)
    written = []
    for obj in objs:
        fname = KIND_FILES.get(obj["kind"])
        if fname is None:
            raise SystemExit(f"write-k8s: no file name for kind {obj['kind']}")
        note = ""
        if obj["kind"] == "Secret":
            note = "# Fill in the values, or drop this file from kustomization.yaml and create the Secret another way.\n"
        if obj["kind"] == "ConfigMap":
            note = "# After changing it: kubectl rollout restart deployment/ingest (Helm does this by checksum).\n"
        with open(os.path.join(K8S, fname), "w", encoding="utf-8") as f:
            f.write(HEADER + note + yaml.dump(obj, Dumper=BlockDumper, sort_keys=False, width=1000))
        written.append(fname)
    kust = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "labels": [{"pairs": {"app.kubernetes.io/managed-by": "kustomize"}}],
            "resources": written}
    with open(os.path.join(K8S, "kustomization.yaml"), "w", encoding="utf-8") as f:
        f.write(HEADER + "# Set `namespace:` here, or pass -n to kubectl.\n"
                + yaml.dump(kust, Dumper=BlockDumper, sort_keys=False))
    print(f"write-k8s: wrote {', '.join(written)}, kustomization.yaml to {rel(K8S)}/", flush=True)


def k8s_files():
    kust = yaml.safe_load(read(os.path.join(K8S, "kustomization.yaml")))
    return [os.path.join(K8S, r) for r in kust.get("resources", [])], kust


def k8s_objects():
    objs = []
    for path in k8s_files()[0]:
        objs.extend(docs(read(path)))
    return objs


def check_k8s_drift():
    if "default" not in renders:
        raise Fail("no default render to compare with")
    paths, kust = k8s_files()
    problems = []
    listed = {os.path.basename(p) for p in paths}
    for f in sorted(os.listdir(K8S)):
        if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and f not in listed:
            problems.append(f"{rel(K8S)}/{f} is not listed in kustomization.yaml")
    want = {key(o): normalize(o) for o in renders["default"]["objects"]}
    have = {key(o): o for o in k8s_objects()}
    for k in sorted(set(want) | set(have), key=str):
        if k not in have:
            problems.append(f"{k[0]}/{k[1]} is in the chart's render but not in {rel(K8S)}")
        elif k not in want:
            problems.append(f"{k[0]}/{k[1]} is in {rel(K8S)} but not in the chart's render")
        elif want[k] != have[k]:
            problems.append(f"{k[0]}/{k[1]} differs from the chart's render: {first_diff(want[k], have[k])}")
    note = "kubectl not found, kustomize build skipped"
    kubectl = shutil.which("kubectl")
    if kubectl:
        p = subprocess.run([kubectl, "kustomize", K8S], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        if p.returncode != 0:
            problems.append(f"kubectl kustomize {rel(K8S)}: {' '.join(p.stderr.split())[:300]}")
        else:
            built = {key(o): o for o in docs(p.stdout)}
            if set(built) != set(have):
                problems.append(f"kubectl kustomize output {sorted(built, key=str)} != files {sorted(have, key=str)}")
            kv = re.search(r"Kustomize Version: (\S+)", subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout or "")
            note = f"kubectl kustomize (kustomize {kv.group(1) if kv else '?'}) builds {len(built)} objects"
    if problems:
        problems.append("run deploy/check.sh --write-k8s after changing the chart")
    fail_if(problems)
    return f"{len(have)} objects in {rel(K8S)} equal the chart's default render (minus Helm-only labels/checksum); {note}"


def first_diff(a, b, path=""):
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


# --------------------------------------------------------------- yamllint ---
YAMLLINT_CONFIG = """
extends: default
rules:
  document-start: disable
  line-length: {max: 200}
  indentation: {spaces: consistent, indent-sequences: whatever}
  braces: {max-spaces-inside: 1}
  comments: {min-spaces-from-content: 1}
  truthy: {check-keys: false}
"""


def check_yamllint():
    from yamllint import linter
    from yamllint.config import YamlLintConfig
    conf = YamlLintConfig(YAMLLINT_CONFIG)
    items = []  # (label, text)
    plain = [os.path.join(CHART, "Chart.yaml"), os.path.join(CHART, "values.yaml")]
    if os.path.isdir(K8S):
        plain += sorted(os.path.join(K8S, f) for f in os.listdir(K8S) if f.endswith((".yaml", ".yml")))
    items += [(rel(p), read(p)) for p in plain]
    for name, r in renders.items():
        for path, text in sorted(r["files"].items()):
            if path.endswith("NOTES.txt") or not text.strip():
                continue
            items.append((f"render[{name}]:{path}", text.lstrip("\n")))
            for d in docs(text):
                if d.get("kind") == "ConfigMap":
                    for k, v in (d.get("data") or {}).items():
                        if k.endswith((".yaml", ".yml")):
                            items.append((f"render[{name}]:ConfigMap/{d['metadata']['name']}:{k}", v))
    problems = []
    for label, text in items:
        for p in linter.run(text, conf):
            if p.level == "error":
                problems.append(f"{label}:{p.line}:{p.column}: {p.desc} ({p.rule})")
    fail_if(problems)
    return f"yamllint {pkg_version('yamllint')}: {len(items)} documents clean ({len(plain)} files, rendered templates, config/schema files)"


# ------------------------------------------------------ kubernetes schemas ---
def check_k8s_schema():
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    sets = [(f"render[{n}]", r["objects"]) for n, r in renders.items()]
    if os.path.isdir(K8S):
        sets.append((rel(K8S), k8s_objects()))
    problems, n, crds, used = [], 0, set(), set()
    for label, objs in sets:
        for obj in objs:
            try:
                used.add(kubernetes_validate.validate(obj, K8S_VERSION, strict=True))
                n += 1
            except SchemaNotFoundError:
                crds.add(obj.get("kind"))
                if obj.get("kind") != "ServiceMonitor":
                    problems.append(f"{label}: {key(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')}")
            except ValidationError as e:
                where = "/".join(str(x) for x in e.absolute_path)
                problems.append(f"{label}: {key(obj)} at {where or '.'}: {' '.join(e.message.split())[:200]}")
    fail_if(problems)
    extra = f"; {', '.join(sorted(crds))} (CRD, no schema) checked in consistency" if crds else ""
    return (f"kubernetes-validate {pkg_version('kubernetes-validate')} --strict, schemas v{'/'.join(sorted(used))} "
            f"(asked {K8S_VERSION}): {n} objects valid{extra}")


# ------------------------------------------------------------- dockerfile ---
dockerfile_facts = {}


def check_dockerfile():
    import dockerfile
    cmds = dockerfile.parse_file(DOCKERFILE)
    problems = []
    stages = [c for c in cmds if c.cmd.upper() == "FROM"]
    names = {c.value[2].lower() for c in stages if len(c.value) >= 3 and c.value[1].upper() == "AS"}
    final = max(i for i, c in enumerate(cmds) if c.cmd.upper() == "FROM")
    last = {}
    for c in cmds[final:]:
        last[c.cmd.upper()] = c
    if stages[0].value[0] != "rust:1.95-bookworm":
        problems.append(f"builder image is {stages[0].value[0]}, expected rust:1.95-bookworm")
    if stages[-1].value[0] != "debian:bookworm-slim":
        problems.append(f"runtime image is {stages[-1].value[0]}, expected debian:bookworm-slim")
    if not any(c.cmd.upper() == "RUN" and re.search(r"cargo build --release\b.*-p ingest\b", c.value[0]) for c in cmds[:final]):
        problems.append("no `cargo build --release ... -p ingest` in the builder stage")
    for c in cmds:
        for flag in c.flags:
            m = re.match(r"--from=(.+)", flag)
            if m and m.group(1).lower() not in names:
                problems.append(f"COPY {flag}: no such stage")
    runtime_runs = " ".join(c.value[0] for c in cmds[final:] if c.cmd.upper() == "RUN")
    if "ca-certificates" not in runtime_runs:
        problems.append("runtime stage does not install ca-certificates")
    user = last.get("USER")
    uid = user.value[0].split(":")[0] if user else ""
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"USER must be a numeric non-root uid (runAsNonRoot), got {uid or 'none'}")
    ep, cmd, expose = last.get("ENTRYPOINT"), last.get("CMD"), last.get("EXPOSE")
    if not ep or not ep.json or list(ep.value) != ["ingest"]:
        problems.append('ENTRYPOINT must be ["ingest"] (exec form)')
    if not cmd or not cmd.json or list(cmd.value) != ["run", "--config", "/etc/ingest/config.yaml"]:
        problems.append('CMD must be ["run","--config","/etc/ingest/config.yaml"]')
    if not expose or "9464" not in [p.split("/")[0] for p in expose.value]:
        problems.append("EXPOSE 9464 missing")
    dockerfile_facts.update(uid=int(uid) if uid.isdigit() else None, cmd=list(cmd.value) if cmd else None,
                            expose=[int(p.split("/")[0]) for p in expose.value] if expose else [])
    # the build context: Cargo.toml, Cargo.lock and every workspace member must survive the ignore file
    ignore = os.path.join(ROOT, "deploy/container/Dockerfile.dockerignore")
    patterns = [l.strip() for l in read(ignore).splitlines() if l.strip() and not l.startswith("#")] if os.path.exists(ignore) else []
    members = tomllib.loads(read(os.path.join(ROOT, "Cargo.toml")))["workspace"]["members"]
    for needed in ["Cargo.toml", "Cargo.lock", *members]:
        for pat in patterns:
            if not pat.startswith("!") and (fnmatch.fnmatch(needed, pat.lstrip("/")) or fnmatch.fnmatch(needed, pat.replace("**/", ""))):
                problems.append(f"{rel(ignore)}: `{pat}` excludes {needed}, which the build needs")
    fail_if(problems)
    return (f"dockerfile {pkg_version('dockerfile')} (BuildKit parser): {len(stages)} stages, USER {uid}, "
            f"ENTRYPOINT/CMD/EXPOSE as expected; build context keeps {', '.join(members)} (not built: no Docker engine)")


# ------------------------------------------------------------ consistency ---
def subset(small, big):
    return bool(small) and all((big or {}).get(k) == v for k, v in small.items())


# Secrets a render only names (secret.existingSecret): stand in with the keys the chart's
# default Secret has, as an operator's Secret would.
STANDIN_SECRETS = {"ingest-credentials": {k: "" for k in DEFAULT_VALUES["secret"]["values"]}}


def pod_env(objs, label):
    """The container's environment as Kubernetes would set it from these objects."""
    dep = next(o for o in objs if o["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    secrets, cms = {}, {}
    for o in objs:
        if o["kind"] == "Secret":
            d = {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
            d.update({k: str(v) for k, v in (o.get("stringData") or {}).items()})
            secrets[o["metadata"]["name"]] = d
    if label.startswith("render["):
        secrets = {**STANDIN_SECRETS, **secrets}
    for o in objs:
        if o["kind"] == "ConfigMap":
            cms[o["metadata"]["name"]] = o.get("data") or {}
    env, external = {}, []
    for src in c.get("envFrom") or []:
        for kind, store in (("secretRef", secrets), ("configMapRef", cms)):
            ref = src.get(kind)
            if ref:
                if ref["name"] in store:
                    env.update({(src.get("prefix") or "") + k: v for k, v in store[ref["name"]].items()})
                elif not ref.get("optional"):
                    external.append(f"{kind} {ref['name']}")
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "valueFrom" in e:
            vf = e["valueFrom"]
            ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
            store = secrets if "secretKeyRef" in vf else cms
            if ref and ref["name"] in store and ref["key"] in store[ref["name"]]:
                env[e["name"]] = store[ref["name"]][ref["key"]]
            elif ref and not ref.get("optional"):
                external.append(f"{e['name']} from {ref['name']}")
            elif not ref:
                env[e["name"]] = "placeholder"
    return env, external


def config_mount(objs):
    """(ConfigMap data, path of --config inside it) for the Deployment's container."""
    dep = next(o for o in objs if o["kind"] == "Deployment")
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    args = list(c.get("args") or dockerfile_facts.get("cmd") or [])
    cfg_path = args[args.index("--config") + 1] if "--config" in args else None
    if not cfg_path:
        raise Fail("container args have no --config")
    mount = next((m for m in c.get("volumeMounts") or [] if m["mountPath"].rstrip("/") == posixpath.dirname(cfg_path)), None)
    if not mount:
        raise Fail(f"no volume mounted at {posixpath.dirname(cfg_path)} for --config {cfg_path}")
    vol = next(v for v in spec.get("volumes") or [] if v["name"] == mount["name"])
    cm_name = (vol.get("configMap") or {}).get("name")
    cm = next((o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name), None)
    if cm is None:
        raise Fail(f"volume {mount['name']} is not a ConfigMap of these manifests")
    data = cm.get("data") or {}
    if posixpath.basename(cfg_path) not in data:
        raise Fail(f"ConfigMap {cm_name} has no key {posixpath.basename(cfg_path)}")
    return data, posixpath.basename(cfg_path)


def consistency(label, objs):
    problems = []
    p = lambda msg: problems.append(f"{label}: {msg}")  # noqa: E731
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        return [f"{label}: expected one Deployment, found {len(deps)}"]
    dep = deps[0]
    tmpl = dep["spec"]["template"]
    pod_labels = tmpl["metadata"].get("labels") or {}
    spec = tmpl["spec"]
    c = spec["containers"][0]
    if not subset(dep["spec"]["selector"].get("matchLabels"), pod_labels):
        p("Deployment selector does not match its pod labels")
    ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports") or []}
    for svc in by_kind.get("Service", []):
        if not subset(svc["spec"].get("selector"), pod_labels):
            p(f"Service {svc['metadata']['name']} selector does not match the pods")
        for sp in svc["spec"]["ports"]:
            if isinstance(sp.get("targetPort"), str) and sp["targetPort"] not in ports:
                p(f"Service targetPort {sp['targetPort']} is not a container port name")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not subset(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
            p("PodDisruptionBudget selector does not match the pods")
        if pdb["spec"].get("minAvailable") is not None and isinstance(pdb["spec"]["minAvailable"], int) \
                and pdb["spec"]["minAvailable"] >= dep["spec"].get("replicas", 1):
            p("PodDisruptionBudget minAvailable >= replicas blocks every node drain")
    for sm in by_kind.get("ServiceMonitor", []):
        svcs = [s for s in by_kind.get("Service", []) if subset(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels"))]
        if not svcs:
            p("ServiceMonitor selects no Service of the release")
        for ep in sm["spec"].get("endpoints") or []:
            if svcs and ep.get("port") not in [sp.get("name") for s in svcs for sp in s["spec"]["ports"]]:
                p(f"ServiceMonitor endpoint port {ep.get('port')} is not a Service port name")
            if ep.get("path") != "/metrics":
                p("ServiceMonitor path is not /metrics")
    sa = spec.get("serviceAccountName")
    if sa and by_kind.get("ServiceAccount") and sa not in [s["metadata"]["name"] for s in by_kind["ServiceAccount"]]:
        p(f"serviceAccountName {sa} is not created")
    # probes and port
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path:
            p(f"{probe} path is {hg.get('path')}, expected {path}")
        if isinstance(hg.get("port"), str) and hg["port"] not in ports:
            p(f"{probe} port {hg['port']} is not a container port name")
    try:
        data, cfg_name = config_mount(objs)
        cfg = yaml.safe_load(data[cfg_name]) or {}
        listen = str((cfg.get("server") or {}).get("listen", "0.0.0.0:9464"))
        if not re.search(r"[0-9]+$", listen) or int(re.search(r"[0-9]+$", listen).group()) not in ports.values():
            p(f"config server.listen {listen} does not match the container ports {sorted(ports.values())}")
        if listen.startswith(("127.", "localhost", "[::1]")):
            p(f"config server.listen {listen} is loopback: probes cannot reach it")
        for i, route in enumerate(cfg.get("routes") or []):
            schema = str(route.get("schema", ""))
            if not schema.startswith("/") and schema not in data:
                p(f"routes[{i}].schema {schema} is not a file of the ConfigMap")
    except Fail as e:
        problems.extend(f"{label}: {a}" for a in e.args)
    # security and shutdown
    psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        p("runAsNonRoot is not set")
    if not csc.get("readOnlyRootFilesystem"):
        p("readOnlyRootFilesystem is not set")
    if csc.get("allowPrivilegeEscalation") is not False:
        p("allowPrivilegeEscalation is not false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        p("capabilities do not drop ALL")
    tmp = next((m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/tmp"), None)
    if not tmp or "emptyDir" not in next((v for v in spec.get("volumes") or [] if v["name"] == tmp["name"]), {}):
        p("/tmp is not an emptyDir (needed with readOnlyRootFilesystem)")
    if spec.get("terminationGracePeriodSeconds", 30) < 60:
        p("terminationGracePeriodSeconds < 60 (flush + commit + leave group on SIGTERM)")
    res = c.get("resources") or {}
    if not (res.get("requests") and res.get("limits")):
        p("resources requests/limits missing")
    uid = dockerfile_facts.get("uid")
    run_as = csc.get("runAsUser", psc.get("runAsUser"))
    if uid is not None and run_as is not None and run_as != uid:
        p(f"runAsUser {run_as} differs from the image's USER {uid}")
    if dockerfile_facts.get("cmd") and c.get("args") and list(c["args"]) != dockerfile_facts["cmd"]:
        p(f"container args {c['args']} differ from the image CMD {dockerfile_facts['cmd']}")
    return problems


def check_consistency():
    sets = [(f"render[{n}]", r["objects"]) for n, r in renders.items()]
    if os.path.isdir(K8S):
        sets.append((rel(K8S), k8s_objects()))
    problems = []
    for label, objs in sets:
        problems += consistency(label, objs)
    fail_if(problems)
    return (f"{len(sets)} object sets: selectors, ports (config server.listen = containerPort = probes/Service/"
            f"ServiceMonitor), schema files in ConfigMap, security context, grace period, image USER/CMD")


# --------------------------------------------------------- ingest validate ---
def find_binary():
    if os.environ.get("INGEST_BIN"):
        return os.environ["INGEST_BIN"]
    found = [p for p in (os.path.join(ROOT, "target/release/ingest"), os.path.join(ROOT, "target/debug/ingest"))
             if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def ingest_validate(binary, data, cfg_name, env, workdir):
    os.makedirs(workdir)
    for k, v in data.items():
        with open(os.path.join(workdir, k), "w", encoding="utf-8") as f:
            f.write(v)
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([binary, "validate", "--config", os.path.join(workdir, cfg_name)], env=full_env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def check_ingest_validate():
    binary = find_binary()
    if not binary:
        raise Skip("no target/release/ingest or target/debug/ingest (cargo build -p ingest); config not checked by the service")
    sources = os.path.join(ROOT, "ingest/src/config")
    stale = ""
    if os.path.isdir(sources):
        newest = max(os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(sources) for f in fs)
        if newest > os.path.getmtime(binary):
            stale = " (binary older than ingest/src/config: rebuild for an exact answer)"
    sets = [(f"render[{n}]", r["objects"]) for n, r in renders.items()]
    if os.path.isdir(K8S):
        sets.append((rel(K8S), k8s_objects()))
    problems, ok, skipped = [], [], []
    tmp = tempfile.mkdtemp(prefix="deploy-check-")
    try:
        for i, (label, objs) in enumerate(sets):
            env, external = pod_env(objs, label)
            if external:
                skipped.append(f"{label} (needs {', '.join(external)})")
                continue
            try:
                data, cfg_name = config_mount(objs)
            except Fail as e:
                problems.extend(f"{label}: {a}" for a in e.args)
                continue
            r = ingest_validate(binary, data, cfg_name, env, os.path.join(tmp, str(i)))
            if r.returncode != 0:
                problems.append(f"{label}: ingest validate exit {r.returncode}: {' '.join((r.stderr or r.stdout).split())[-400:]}")
            else:
                ok.append(f"{label} ({len([l for l in r.stdout.splitlines() if l.startswith('route ')])} routes)")
        # The check has teeth: an unknown key must be refused.
        if "default" in renders:
            data, cfg_name = config_mount(renders["default"]["objects"])
            env, _ = pod_env(renders["default"]["objects"], "default")
            bad = dict(data)
            bad[cfg_name] = data[cfg_name] + "\nbogus_key_for_check: 1\n"
            r = ingest_validate(binary, bad, cfg_name, env, os.path.join(tmp, "negative"))
            if r.returncode == 0 or "bogus_key_for_check" not in r.stderr:
                problems.append(f"ingest validate accepted a config with an unknown key (exit {r.returncode})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fail_if(problems)
    detail = f"{rel(binary) if binary.startswith(ROOT) else binary}{stale}: accepted {', '.join(ok)}; unknown key refused"
    if skipped:
        detail += f"; not run for {', '.join(skipped)}"
    detail += "; render[scaled] ran with a stand-in for its existingSecret"
    return detail


# ------------------------------------------------------------------- main ---
print(f"PASS {'tools':<16} {float(TOOLS_SECS):6.2f}s  {TOOLS_NOTE}: {TOOLS}", flush=True)
results.append("PASS")
if MODE == "write":
    write_k8s()
run_check("dockerfile", check_dockerfile)
run_check("helm-lint", check_helm_lint)
run_check("helm-render", check_helm_render)
run_check("yamllint", check_yamllint)
run_check("k8s-schema", check_k8s_schema)
run_check("consistency", check_consistency)
run_check("k8s-drift", check_k8s_drift)
run_check("ingest-validate", check_ingest_validate)
passed, failed, skipped = (results.count(s) for s in ("PASS", "FAIL", "SKIP"))
print(f"check.sh: {passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""), flush=True)
sys.exit(1 if failed else 0)
PYEOF
