"""deploy/container/Dockerfile as BuildKit parses it: the images, the build, a non-root
runtime that starts `ingest run` on the shipped config, and a build context that keeps
what the build needs. Not built (no Docker engine)."""
import fnmatch
import re
import tomllib

from chart import ROOT, rel
from image import DOCKERIGNORE, ignore_patterns


def test_base_images(image):
    assert image.stages[0].value[0] == "rust:1.95-bookworm", "builder image"
    assert image.stages[-1].value[0] == "debian:bookworm-slim", "runtime image"


def test_builder_builds_the_service(image):
    assert any(re.search(r"cargo build --release\b.*-p ingest\b", run) for run in image.runs(final_stage=False)), \
        "no `cargo build --release ... -p ingest` in the builder stage"


def test_copy_from_names_a_stage(image):
    bad = [f"COPY {flag}: no such stage" for c in image.commands for flag in c.flags
           if (m := re.match(r"--from=(.+)", flag)) and m.group(1).lower() not in image.stage_names]
    assert not bad, "\n".join(bad)


def test_runtime_installs_ca_certificates(image):
    assert "ca-certificates" in " ".join(image.runs(final_stage=True)), "runtime stage does not install ca-certificates"


def test_user_is_numeric_non_root(image):
    assert image.uid not in (None, 0), \
        f"USER must be a numeric non-root uid (runAsNonRoot), got {image.user or 'none'}"


def test_entrypoint_and_cmd_run_the_shipped_config(image):
    ep, cmd = image.last.get("ENTRYPOINT"), image.last.get("CMD")
    assert ep and ep.json and list(ep.value) == ["ingest"], 'ENTRYPOINT must be ["ingest"] (exec form)'
    assert cmd and cmd.json and list(cmd.value) == ["run", "--config", "/etc/ingest/config.yaml"], \
        'CMD must be ["run","--config","/etc/ingest/config.yaml"]'


def test_exposes_the_metrics_port(image):
    assert 9464 in image.expose, "EXPOSE 9464 missing"


def test_build_context_keeps_the_workspace():
    """Cargo.toml, Cargo.lock and every workspace member must survive the ignore file."""
    members = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))["workspace"]["members"]
    bad = [f"{rel(DOCKERIGNORE)}: `{pat}` excludes {needed}, which the build needs"
           for needed in ["Cargo.toml", "Cargo.lock", *members] for pat in ignore_patterns()
           if not pat.startswith("!")
           and (fnmatch.fnmatch(needed, pat.lstrip("/")) or fnmatch.fnmatch(needed, pat.replace("**/", "")))]
    assert not bad, "\n".join(bad)
