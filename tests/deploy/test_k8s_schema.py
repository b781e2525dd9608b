"""Every object of every set validates, strictly (no unknown fields), against the
Kubernetes JSON schemas of K8S_VERSION bundled in kubernetes-validate. A ServiceMonitor
and KEDA's ScaledObject are CRDs without a bundled schema: test_consistency.py checks
them instead."""
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

import chart
from conftest import K8S_VERSION

CRDS_WITHOUT_SCHEMA = {"ServiceMonitor", "ScaledObject"}


def test_objects_match_the_schemas(manifests):
    problems = []
    for obj in manifests.objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except SchemaNotFoundError:
            if obj.get("kind") not in CRDS_WITHOUT_SCHEMA:
                problems.append(f"{chart.key(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')}")
        except ValidationError as e:
            where = "/".join(str(x) for x in e.absolute_path)
            problems.append(f"{chart.key(obj)} at {where or '.'}: {' '.join(e.message.split())[:200]}")
    assert not problems, f"{manifests.label} (schemas of Kubernetes {K8S_VERSION}):\n" + "\n".join(problems)
