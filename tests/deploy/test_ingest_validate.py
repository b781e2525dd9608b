"""The config each set ships, checked by the service itself: `ingest validate` runs on the
mounted files with the environment the pod would have, and must refuse a config with an
unknown key (so a pass means something)."""
import os
import subprocess

from pod import STANDIN_SECRETS, config_mount, pod_env


def ingest_validate(binary, data, cfg_name, env, workdir):
    """`ingest validate --config` on the ConfigMap `data` written into `workdir`."""
    workdir.mkdir()
    for name, text in data.items():
        (workdir / name).write_text(text, encoding="utf-8")
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([binary, "validate", "--config", str(workdir / cfg_name)], env=full_env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def test_service_accepts_the_shipped_config(manifests, image, ingest_bin, tmp_path):
    # A render may only name a Secret (secret.existingSecret): STANDIN_SECRETS plays it.
    env, external = pod_env(manifests.objects, standins=manifests.label.startswith("render["))
    assert not external, f"{manifests.label} needs {', '.join(external)} from outside: add a stand-in to " \
                         f"pod.STANDIN_SECRETS (today: {sorted(STANDIN_SECRETS)})"
    data, cfg_name = config_mount(manifests.objects, image.cmd)
    r = ingest_validate(ingest_bin, data, cfg_name, env, tmp_path / "config")
    assert r.returncode == 0, \
        f"{manifests.label}: ingest validate exit {r.returncode}: {' '.join((r.stderr or r.stdout).split())[-400:]}"
    assert any(line.startswith("route ") for line in r.stdout.splitlines()), \
        f"{manifests.label}: ingest validate listed no route:\n{r.stdout}"


def test_service_refuses_an_unknown_key(object_sets, image, ingest_bin, tmp_path):
    objects = object_sets["render[default]"]
    data, cfg_name = config_mount(objects, image.cmd)
    env, _ = pod_env(objects)
    bad = {**data, cfg_name: data[cfg_name] + "\nbogus_key_for_check: 1\n"}
    r = ingest_validate(ingest_bin, bad, cfg_name, env, tmp_path / "negative")
    assert r.returncode != 0 and "bogus_key_for_check" in r.stderr, \
        f"ingest validate accepted a config with an unknown key (exit {r.returncode})"
