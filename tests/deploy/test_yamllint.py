"""yamllint over every YAML a deployment consists of: the chart's own files, the plain
manifests, each rendered template and the config files the ConfigMap carries."""
import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

import chart

CONFIG = YamlLintConfig("""
extends: default
rules:
  document-start: disable
  line-length: {max: 200}
  indentation: {spaces: consistent, indent-sequences: whatever}
  braces: {max-spaces-inside: 1}
  comments: {min-spaces-from-content: 1}
  truthy: {check-keys: false}
""")


def lint_errors(items):
    """'label:line:column: problem (rule)' for each error in the (label, text) items."""
    return [f"{label}:{p.line}:{p.column}: {p.desc} ({p.rule})"
            for label, text in items for p in linter.run(text, CONFIG) if p.level == "error"]


def test_chart_and_manifest_files():
    files = [chart.CHART / "Chart.yaml", chart.CHART / "values.yaml"]
    if chart.K8S.is_dir():
        files += sorted(p for p in chart.K8S.iterdir() if p.name.endswith((".yaml", ".yml")))
    errors = lint_errors([(chart.rel(p), p.read_text(encoding="utf-8")) for p in files])
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("variant", chart.RENDERED)
def test_rendered_templates_and_config_files(variant, renders):
    items = []
    for path, text in sorted(renders[variant].items()):
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        items.append((f"render[{variant}]:{path}", text.lstrip("\n")))
        for d in chart.docs(text):
            if d.get("kind") == "ConfigMap":
                items += [(f"render[{variant}]:ConfigMap/{d['metadata']['name']}:{k}", v)
                          for k, v in (d.get("data") or {}).items() if k.endswith((".yaml", ".yml"))]
    errors = lint_errors(items)
    assert not errors, "\n".join(errors)
