"""The Helm chart deploy/helm/ingest rendered in process, and the plain manifests
deploy/k8s/ generated from its default render.

One module for both so the manifests are written by the same code the checks compare
them with. Rendering uses helm-python-sdk (the Helm v4 Go SDK in a wheel), so no `helm`
binary is needed. Run as a script to regenerate deploy/k8s/ after changing the chart:

    make k8s-manifests        # = $PY tests/deploy/chart.py --write-k8s
"""
import argparse
import copy
import os
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/ingest"
K8S = ROOT / "deploy/k8s"
RELEASE = "ingest"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
HELM_ONLY_ANNOTATIONS = ("checksum/config",)
WRITE_COMMAND = "make k8s-manifests"


def docs(text):
    """The YAML documents of `text`, empty ones left out."""
    return [d for d in yaml.safe_load_all(text) if d is not None]


def rel(path):
    return os.path.relpath(path, ROOT)


DEFAULT_VALUES = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
CONFIG_TEXT = "# config given as text (replaces the default config wholesale)\n" + yaml.safe_dump(
    {**DEFAULT_VALUES["config"], "server": {"listen": "0.0.0.0:9500"}}, sort_keys=False)

# Values an operator would give the chart: name -> (values, None or the refusal expected).
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
    "config-as-text": ({"config": CONFIG_TEXT}, None),
    "hpa": ({"autoscaling": {"enabled": True, "maxReplicas": 6},
             "config": {"server": {"listen": "0.0.0.0:9464", "drain_timeout": "2m"}},
             "terminationGracePeriodSeconds": 150}, None),
    "keda": ({"keda": {"enabled": True, "bootstrapServers": "kafka-0.kafka:9092", "topic": "events",
                       "authenticationRef": "kafka-sasl", "lagThreshold": 1000000}}, None),
    "sqlite-scaled": ({"replicaCount": 2, "config": {"iceberg": {"catalog": {"uri": "sqlite:///var/lib/ingest/catalog.db"}}}},
                      "SQLite Iceberg catalog only works with replicaCount: 1"),
    "sqlite-autoscaled": ({"autoscaling": {"enabled": True},
                           "config": {"iceberg": {"catalog": {"uri": "sqlite:///var/lib/ingest/catalog.db"}}}},
                          "SQLite Iceberg catalog only works with replicaCount: 1 and no autoscaling"),
    "two-autoscalers": ({"autoscaling": {"enabled": True}, "keda": {"enabled": True, "bootstrapServers": "k:9092"}},
                        "enable either autoscaling"),
    "keda-brokers-from-env": ({"keda": {"enabled": True}}, "keda.bootstrapServers"),
    "grace-shorter-than-drain": ({"terminationGracePeriodSeconds": 50},
                                 "terminationGracePeriodSeconds (50) must be at least config.server.drain_timeout (45s) + 10 s"),
    "drain-unreadable": ({"config": {"server": {"listen": "0.0.0.0:9464", "drain_timeout": "1h 30m"}}},
                         "config.server.drain_timeout"),
}
RENDERED = [name for name, (_, refusal) in VARIANTS.items() if refusal is None]
REFUSED = [name for name, (_, refusal) in VARIANTS.items() if refusal is not None]


def render(values):
    """{template path: rendered text} of the chart with `values`; raises helm.HelmError."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values or None, name=RELEASE, namespace="default")


def objects_of(files):
    """The Kubernetes objects of a render (NOTES.txt is text for the operator, not YAML)."""
    return [d for path in sorted(files) if not path.endswith("NOTES.txt") for d in docs(files[path])]


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


# ------------------------------------------------------------- plain manifests ---
def k8s_files():
    """(paths kustomization.yaml lists, the kustomization)."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    return [K8S / r for r in kust.get("resources", [])], kust


def k8s_objects():
    return [obj for path in k8s_files()[0] for obj in docs(path.read_text(encoding="utf-8"))]


class BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the config files in the ConfigMap) as `|` blocks."""


def _str_rep(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


BlockDumper.add_representer(str, _str_rep)
KIND_FILES = {"ServiceAccount": "serviceaccount.yaml", "Secret": "secret.yaml", "ConfigMap": "configmap.yaml",
              "Service": "service.yaml", "Deployment": "deployment.yaml", "PodDisruptionBudget": "poddisruptionbudget.yaml"}
KIND_NOTES = {
    "Secret": "# Fill in the values, or drop this file from kustomization.yaml and create the Secret another way.\n",
    "ConfigMap": "# After changing it: kubectl rollout restart deployment/ingest (Helm does this by checksum).\n",
}
HEADER = ("# Generated from the Helm chart deploy/helm/ingest (default values, release `ingest`) by\n"
          f"# `{WRITE_COMMAND}`; `make deploy-check` fails when the two differ. Change the chart,\n"
          "# then regenerate. Apply with `kubectl apply -k deploy/k8s` (kustomization.yaml lists the files).\n")


def write_k8s():
    """Regenerates deploy/k8s/ (one file per kind and kustomization.yaml) from the default render."""
    objs = [normalize(o) for o in objects_of(render({}))]
    K8S.mkdir(parents=True, exist_ok=True)
    written = []
    for obj in objs:
        fname = KIND_FILES.get(obj["kind"])
        if fname is None:
            raise SystemExit(f"write-k8s: no file name for kind {obj['kind']}")
        (K8S / fname).write_text(HEADER + KIND_NOTES.get(obj["kind"], "")
                                 + yaml.dump(obj, Dumper=BlockDumper, sort_keys=False, width=1000), encoding="utf-8")
        written.append(fname)
    kust = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "labels": [{"pairs": {"app.kubernetes.io/managed-by": "kustomize"}}],
            "resources": written}
    (K8S / "kustomization.yaml").write_text(HEADER + "# Set `namespace:` here, or pass -n to kubectl.\n"
                                            + yaml.dump(kust, Dumper=BlockDumper, sort_keys=False), encoding="utf-8")
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-k8s", action="store_true", required=True,
                        help="regenerate deploy/k8s/ from the chart's default render")
    parser.parse_args()
    written = write_k8s()
    print(f"write-k8s: wrote {', '.join(written)}, kustomization.yaml to {rel(K8S)}/")


if __name__ == "__main__":
    main()
