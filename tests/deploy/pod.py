"""What the service's pod would see, worked out from a set of manifests as Kubernetes
would: its environment (env, envFrom, Secret and ConfigMap references) and the config
files mounted where `--config` points. The consistency checks and `ingest validate`
both start from here.
"""
import base64
import posixpath

from chart import DEFAULT_VALUES

# Secrets a render only names (secret.existingSecret): stand in with the keys the chart's
# default Secret has, as an operator's Secret would.
STANDIN_SECRETS = {"ingest-credentials": {k: "" for k in DEFAULT_VALUES["secret"]["values"]}}


class MountProblem(Exception):
    """The manifests do not mount a config where the container's --config points."""


def deployment(objs):
    return next(o for o in objs if o["kind"] == "Deployment")


def container(objs):
    return deployment(objs)["spec"]["template"]["spec"]["containers"][0]


def pod_env(objs, standins=False):
    """(the container's environment, the references it needs from outside `objs`).
    `standins`: resolve the Secrets a render only names with STANDIN_SECRETS."""
    c = container(objs)
    secrets, cms = {}, {}
    for o in objs:
        if o["kind"] == "Secret":
            d = {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
            d.update({k: str(v) for k, v in (o.get("stringData") or {}).items()})
            secrets[o["metadata"]["name"]] = d
    if standins:
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


def config_mount(objs, image_cmd):
    """(ConfigMap data, file name of --config inside it) for the Deployment's container;
    its args, or the image's CMD (`image_cmd`) when it has none, give --config."""
    spec = deployment(objs)["spec"]["template"]["spec"]
    c = spec["containers"][0]
    args = list(c.get("args") or image_cmd or [])
    cfg_path = args[args.index("--config") + 1] if "--config" in args else None
    if not cfg_path:
        raise MountProblem("container args have no --config")
    mount = next((m for m in c.get("volumeMounts") or [] if m["mountPath"].rstrip("/") == posixpath.dirname(cfg_path)), None)
    if not mount:
        raise MountProblem(f"no volume mounted at {posixpath.dirname(cfg_path)} for --config {cfg_path}")
    vol = next(v for v in spec.get("volumes") or [] if v["name"] == mount["name"])
    cm_name = (vol.get("configMap") or {}).get("name")
    cm = next((o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name), None)
    if cm is None:
        raise MountProblem(f"volume {mount['name']} is not a ConfigMap of these manifests")
    data = cm.get("data") or {}
    if posixpath.basename(cfg_path) not in data:
        raise MountProblem(f"ConfigMap {cm_name} has no key {posixpath.basename(cfg_path)}")
    return data, posixpath.basename(cfg_path)
