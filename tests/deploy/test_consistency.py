"""The objects of each set agree with each other, with the service's config and with the
image: selectors select the pods, named ports exist, the config listens where probes,
Service and ServiceMonitor look, the pod runs locked down as the image's user and has
time to flush on SIGTERM. Each test runs once per object set (see conftest.OBJECT_SETS)."""
import re
from dataclasses import dataclass

import yaml

from pod import MountProblem, config_mount


@dataclass
class Pod:
    """The parts of a set the checks look at."""
    by_kind: dict
    deployment: dict
    labels: dict
    spec: dict
    container: dict
    ports: dict  # container port name -> number

    @classmethod
    def of(cls, objects):
        by_kind = {}
        for o in objects:
            by_kind.setdefault(o["kind"], []).append(o)
        deps = by_kind.get("Deployment", [])
        assert len(deps) == 1, f"expected one Deployment, found {len(deps)}"
        tmpl = deps[0]["spec"]["template"]
        c = tmpl["spec"]["containers"][0]
        return cls(by_kind, deps[0], tmpl["metadata"].get("labels") or {}, tmpl["spec"], c,
                   {pt.get("name"): pt["containerPort"] for pt in c.get("ports") or []})

    def kind(self, kind):
        return self.by_kind.get(kind, [])


def subset(small, big):
    return bool(small) and all((big or {}).get(k) == v for k, v in small.items())


def no_problems(label, problems):
    assert not problems, f"{label}:\n" + "\n".join(problems)


def test_selectors_select_the_pods(manifests):
    pod, problems = Pod.of(manifests.objects), []
    if not subset(pod.deployment["spec"]["selector"].get("matchLabels"), pod.labels):
        problems.append("Deployment selector does not match its pod labels")
    for svc in pod.kind("Service"):
        if not subset(svc["spec"].get("selector"), pod.labels):
            problems.append(f"Service {svc['metadata']['name']} selector does not match the pods")
    for pdb in pod.kind("PodDisruptionBudget"):
        if not subset(pdb["spec"]["selector"].get("matchLabels"), pod.labels):
            problems.append("PodDisruptionBudget selector does not match the pods")
    no_problems(manifests.label, problems)


def test_disruption_budget_allows_a_drain(manifests):
    pod = Pod.of(manifests.objects)
    for pdb in pod.kind("PodDisruptionBudget"):
        least = pdb["spec"].get("minAvailable")
        assert not (isinstance(least, int) and least >= pod.deployment["spec"].get("replicas", 1)), \
            f"{manifests.label}: PodDisruptionBudget minAvailable >= replicas blocks every node drain"


def test_service_ports_name_container_ports(manifests):
    pod = Pod.of(manifests.objects)
    bad = [f"Service targetPort {sp['targetPort']} is not a container port name"
           for svc in pod.kind("Service") for sp in svc["spec"]["ports"]
           if isinstance(sp.get("targetPort"), str) and sp["targetPort"] not in pod.ports]
    no_problems(manifests.label, bad)


def test_service_monitor_scrapes_a_service(manifests):
    pod, problems = Pod.of(manifests.objects), []
    for sm in pod.kind("ServiceMonitor"):
        svcs = [s for s in pod.kind("Service") if subset(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels"))]
        if not svcs:
            problems.append("ServiceMonitor selects no Service of the release")
        for ep in sm["spec"].get("endpoints") or []:
            if svcs and ep.get("port") not in [sp.get("name") for s in svcs for sp in s["spec"]["ports"]]:
                problems.append(f"ServiceMonitor endpoint port {ep.get('port')} is not a Service port name")
            if ep.get("path") != "/metrics":
                problems.append("ServiceMonitor path is not /metrics")
    no_problems(manifests.label, problems)


def test_service_account_is_created(manifests):
    pod = Pod.of(manifests.objects)
    sa, created = pod.spec.get("serviceAccountName"), pod.kind("ServiceAccount")
    assert not (sa and created and sa not in [s["metadata"]["name"] for s in created]), \
        f"{manifests.label}: serviceAccountName {sa} is not created"


def test_probes_ask_health_and_ready(manifests):
    pod, problems = Pod.of(manifests.objects), []
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        hg = (pod.container.get(probe) or {}).get("httpGet") or {}
        if hg.get("path") != path:
            problems.append(f"{probe} path is {hg.get('path')}, expected {path}")
        if isinstance(hg.get("port"), str) and hg["port"] not in pod.ports:
            problems.append(f"{probe} port {hg['port']} is not a container port name")
    no_problems(manifests.label, problems)


def test_config_listens_on_the_container_port(manifests, image):
    pod, problems = Pod.of(manifests.objects), []
    try:
        data, cfg_name = config_mount(manifests.objects, image.cmd)
    except MountProblem as e:
        raise AssertionError(f"{manifests.label}: {e}") from None
    cfg = yaml.safe_load(data[cfg_name]) or {}
    listen = str((cfg.get("server") or {}).get("listen", "0.0.0.0:9464"))
    port = re.search(r"[0-9]+$", listen)
    if not port or int(port.group()) not in pod.ports.values():
        problems.append(f"config server.listen {listen} does not match the container ports {sorted(pod.ports.values())}")
    if listen.startswith(("127.", "localhost", "[::1]")):
        problems.append(f"config server.listen {listen} is loopback: probes cannot reach it")
    for i, route in enumerate(cfg.get("routes") or []):
        schema = str(route.get("schema", ""))
        if not schema.startswith("/") and schema not in data:
            problems.append(f"routes[{i}].schema {schema} is not a file of the ConfigMap")
    no_problems(manifests.label, problems)


def test_security_context_locks_the_pod_down(manifests):
    pod, problems = Pod.of(manifests.objects), []
    psc, csc = pod.spec.get("securityContext") or {}, pod.container.get("securityContext") or {}
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not set")
    if not csc.get("readOnlyRootFilesystem"):
        problems.append("readOnlyRootFilesystem is not set")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities do not drop ALL")
    tmp = next((m for m in pod.container.get("volumeMounts") or [] if m["mountPath"] == "/tmp"), None)
    if not tmp or "emptyDir" not in next((v for v in pod.spec.get("volumes") or [] if v["name"] == tmp["name"]), {}):
        problems.append("/tmp is not an emptyDir (needed with readOnlyRootFilesystem)")
    no_problems(manifests.label, problems)


def test_shutdown_time_and_resources(manifests, image):
    pod, problems = Pod.of(manifests.objects), []
    grace = pod.spec.get("terminationGracePeriodSeconds", 30)
    if grace < 60:
        problems.append("terminationGracePeriodSeconds < 60 (flush + commit + leave group on SIGTERM)")
    data, cfg_name = config_mount(manifests.objects, image.cmd)
    cfg = yaml.safe_load(data[cfg_name]) or {}
    drain = str((cfg.get("server") or {}).get("drain_timeout", "45s"))
    m = re.fullmatch(r"([0-9]+)(s|m)", drain)
    if not m:
        problems.append(f"server.drain_timeout {drain} is not in seconds or minutes")
    elif grace < int(m.group(1)) * (60 if m.group(2) == "m" else 1) + 10:
        problems.append(f"terminationGracePeriodSeconds {grace} leaves no 10 s past server.drain_timeout {drain}")
    res = pod.container.get("resources") or {}
    if not (res.get("requests") and res.get("limits")):
        problems.append("resources requests/limits missing")
    no_problems(manifests.label, problems)


def test_autoscalers_scale_the_deployment(manifests):
    """An HPA or a KEDA ScaledObject targets the release's Deployment, which then leaves
    its replica count to them; never both (KEDA makes its own HPA)."""
    pod, problems = Pod.of(manifests.objects), []
    name = pod.deployment["metadata"]["name"]
    hpas, scaled = pod.kind("HorizontalPodAutoscaler"), pod.kind("ScaledObject")
    if hpas and scaled:
        problems.append("both an HPA and a KEDA ScaledObject")
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref.get("kind"), ref.get("name")) != ("Deployment", name):
            problems.append(f"the HPA targets {ref}, not Deployment {name}")
    for so in scaled:
        if so["spec"]["scaleTargetRef"].get("name") != name:
            problems.append(f"the ScaledObject targets {so['spec']['scaleTargetRef']}, not {name}")
        for trigger in so["spec"].get("triggers") or []:
            meta = trigger.get("metadata") or {}
            if trigger.get("type") != "kafka" or not meta.get("consumerGroup") or "${" in meta.get("bootstrapServers", "${"):
                problems.append(f"the ScaledObject's trigger cannot measure the group's lag: {trigger}")
            if not str(meta.get("lagThreshold", "")).isdigit():
                problems.append(f"the ScaledObject's lagThreshold {meta.get('lagThreshold')!r} is not a whole number")
    if (hpas or scaled) and "replicas" in pod.deployment["spec"]:
        problems.append("the Deployment sets replicas while an autoscaler owns them")
    no_problems(manifests.label, problems)


def test_pod_runs_the_image_as_built(manifests, image):
    pod, problems = Pod.of(manifests.objects), []
    csc, psc = pod.container.get("securityContext") or {}, pod.spec.get("securityContext") or {}
    run_as = csc.get("runAsUser", psc.get("runAsUser"))
    if image.uid is not None and run_as is not None and run_as != image.uid:
        problems.append(f"runAsUser {run_as} differs from the image's USER {image.uid}")
    args = pod.container.get("args")
    if image.cmd and args and list(args) != image.cmd:
        problems.append(f"container args {args} differ from the image CMD {image.cmd}")
    no_problems(manifests.label, problems)
