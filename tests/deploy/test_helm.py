"""The Helm chart deploy/helm/ingest: `helm lint --strict`, and each variant of values
renders (or is refused with the chart's own message, for the variants that must be)."""
import re

import pytest

import chart
from conftest import K8S_VERSION


def test_helm_lint_strict():
    report = chart.helm.lint(str(chart.CHART), strict=True, kube_version=f"v{K8S_VERSION}")
    problems = [f"{m.get('path')}: {m.get('error')}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += report.get("errors") or []
    assert not problems, f"helm lint --strict (Helm SDK {chart.helm.helm_sdk_version()}, kube {K8S_VERSION}):\n" \
                         + "\n".join(problems)


@pytest.mark.parametrize("variant", chart.RENDERED)
def test_variant_renders(variant):
    objects = chart.objects_of(chart.render(chart.VARIANTS[variant][0]))
    assert objects, f"{variant}: the render has no objects"


@pytest.mark.parametrize("variant", chart.REFUSED)
def test_variant_is_refused(variant):
    values, refusal = chart.VARIANTS[variant]
    with pytest.raises(chart.helm.HelmError, match=re.escape(refusal)):
        chart.render(values)
