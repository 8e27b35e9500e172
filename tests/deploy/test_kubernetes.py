"""Kustomize overlays and components: they render, validate against Kubernetes' schemas offline, and hold our rules."""

from __future__ import annotations

import base64
import functools
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.queries import ALERTS, DASHBOARD, ROOT
from tests.deploy.settings_check import check_service_env, service_settings, unknown_variables
from tests.deploy.tools import require, run

KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
COMPONENTS = ("keda-delivery", "servicemonitor", "monitoring-labels", "proxy-protocol", "tls")
# Oldest and newest Kubernetes minor versions the manifests are checked against.
K8S_VERSIONS = ("1.29.0", "1.37.0")
# Custom resources: kubernetes-validate has no schema for them, so they are checked by the tests below instead.
CRD_API_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
SERVICES = {"smtp-ingress": "smtp_ingress", "delivery": "delivery", "pop3": "pop3", "store": "store"}
MAIL_PORTS = {"smtp": {25, 587, 465}, "pop3": {110, 995}}

Manifest = dict[str, Any]


@functools.cache
def render(overlay: str, components: tuple[str, ...] = ()) -> tuple[Manifest, ...]:
    """`kubectl kustomize` of an overlay, optionally with extra components (through a temporary kustomization)."""
    kubectl = require("kubectl")
    with tempfile.TemporaryDirectory() as tmp:
        if components:
            relative = functools.partial(os.path.relpath, start=tmp)
            kustomization = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [relative(KUSTOMIZE / "overlays" / overlay)],
                "components": [relative(KUSTOMIZE / "components" / c) for c in components],
            }
            Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
            target = tmp
        else:
            target = str(KUSTOMIZE / "overlays" / overlay)
        result = run([kubectl, "kustomize", target])
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


# A kustomize generator's name: the name given, a dash and ten characters of the content hash.
GENERATED = re.compile(r"^(?P<base>.+)-[a-z0-9]{10}$")


def generated(docs: tuple[Manifest, ...], kind: str, base: str) -> Manifest:
    """The one ConfigMap or Secret that kustomize generated as `base` (its name carries the content hash)."""
    (doc,) = [
        doc
        for name, doc in of_kind(docs, kind).items()
        if (match := GENERATED.match(name)) is not None and match["base"] == base
    ]
    return doc


def secret_values(docs: tuple[Manifest, ...], base: str = "postroom-secrets") -> dict[str, str]:
    secret = generated(docs, "Secret", base)
    values = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return {**values, **secret.get("stringData", {})}


def validate(doc: Manifest, version: str) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    kubernetes_validate.validate(doc, version, strict=True)


VARIANTS = [(overlay, ()) for overlay in OVERLAYS] + [(overlay, COMPONENTS) for overlay in OVERLAYS]


@pytest.mark.parametrize(("overlay", "components"), VARIANTS, ids=lambda v: "+".join(v) if isinstance(v, tuple) else v)
def test_overlay_renders_and_validates_against_the_kubernetes_schemas(
    overlay: str, components: tuple[str, ...]
) -> None:
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the dev extra)")
    docs = render(overlay, components)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_API_GROUPS):
            continue
        for version in K8S_VERSIONS:
            validate(doc, version)
        checked += 1
    assert checked >= 25


def test_the_validator_rejects_a_misspelt_field() -> None:
    """Negative control: strict validation really reads our fields (a typo must not pass silently)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = of_kind(render("dev"), "Deployment")["smtp-ingress"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = broken["spec"]["template"]["spec"][
        "containers"
    ][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, K8S_VERSIONS[-1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_are_locked_down_and_probed(overlay: str) -> None:
    deployments = of_kind(render(overlay), "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert container["command"] == ["python", "-m", f"services.{SERVICES[name]}"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        metrics_port = int(env["POSTROOM_METRICS_LISTEN"].rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == metrics_port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_dev_backends_meet_the_restricted_pod_security_profile() -> None:
    statefulsets = of_kind(render("dev"), "StatefulSet")
    assert set(statefulsets) == {"redis", "rabbitmq"}
    for name, statefulset in statefulsets.items():
        pod = statefulset["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
        assert statefulset["spec"]["volumeClaimTemplates"], name
    redis_args = statefulsets["redis"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    assert redis_args[redis_args.index("--appendfsync") + 1] == "everysec"


def quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (Mi, Gi) or a Redis size (768mb)."""
    match = re.fullmatch(r"(\d+)\s*(Ki|Mi|Gi|kb|mb|gb|GB|MB)?", str(text).strip())
    assert match is not None, text
    unit = (match[2] or "").lower().rstrip("bi")
    return int(match[1]) * int(1024 ** " kmg".index(unit or " "))


def test_dev_redis_snapshots_and_refuses_writes_below_its_memory_limit() -> None:
    """AOF and RDB snapshots; maxmemory with noeviction (stored mail is never evicted) below the container limit,
    with room for the fork of a snapshot; its exporter beside it, scraped on the Service's metrics port."""
    pod = of_kind(render("dev"), "StatefulSet")["redis"]["spec"]["template"]["spec"]
    redis, exporter = pod["containers"]
    args = redis["args"]
    save = args[args.index("--save") + 1].split()
    assert save and len(save) % 2 == 0 and all(part.isdigit() for part in save)
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = quantity(args[args.index("--maxmemory") + 1])
    assert 0.5 <= maxmemory / quantity(redis["resources"]["limits"]["memory"]) <= 0.8
    assert exporter["image"].startswith("oliver006/redis_exporter:")
    env = {e["name"]: e for e in exporter["env"]}
    assert env["REDIS_ADDR"]["value"] == "redis://127.0.0.1:6379"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_PASSWORD"
    assert {"name": "metrics", "containerPort": 9121} in exporter["ports"]


def test_dev_rabbitmq_sizes_its_memory_alarm_by_its_limit() -> None:
    docs = render("dev")
    pod = of_kind(docs, "StatefulSet")["rabbitmq"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"].startswith("/etc/rabbitmq/conf.d/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = of_kind(docs, "ConfigMap")[volume["configMap"]["name"]]
    settings = dict(
        line.split(" = ", 1)
        for line in configmap["data"][mount["subPath"]].splitlines()
        if line and not line.startswith("#")
    )
    assert quantity(settings["total_memory_available_override_value"]) == quantity(
        container["resources"]["limits"]["memory"]
    )


def pod_templates(docs: tuple[Manifest, ...]) -> dict[str, Manifest]:
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc["spec"]["template"]["spec"]
        for doc in docs
        if doc["kind"] in ("Deployment", "StatefulSet")
    }


def references(pod: Manifest) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret a pod reads: envFrom, env valueFrom, volumes."""
    found: set[tuple[str, str]] = set()
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if key in source:
                    found.add((kind, source[key]["name"]))
        for entry in container.get("env", []):
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if key in entry.get("valueFrom", {}):
                    found.add((kind, entry["valueFrom"][key]["name"]))
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            found.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            found.add(("Secret", volume["secret"]["secretName"]))
    return found


@pytest.mark.parametrize(("overlay", "components"), VARIANTS, ids=lambda v: "+".join(v) if isinstance(v, tuple) else v)
def test_every_configmap_and_secret_a_pod_reads_is_generated_with_a_hash(
    overlay: str, components: tuple[str, ...]
) -> None:
    """A change of configuration or secret changes the name, so the pod template, so the pods roll."""
    docs = render(overlay, components)
    shipped = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    for where, pod in pod_templates(docs).items():
        for kind, name in references(pod):
            if (kind, name) == ("Secret", "postroom-tls"):
                continue  # made by cert-manager (components/tls), not by these manifests
            assert (kind, name) in shipped, (where, kind, name)
            assert GENERATED.match(name), f"{where} reads {kind} {name}, which no content hash names"


def test_a_changed_setting_or_password_rolls_the_pods(tmp_path: Path) -> None:
    kubectl = require("kubectl")
    overlay = tmp_path / "changed"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(KUSTOMIZE / "overlays" / "dev", overlay)],
        "configMapGenerator": [
            {"name": "postroom-config", "behavior": "merge", "literals": ["POSTROOM_LOG_LEVEL=info"]}
        ],
        "secretGenerator": [
            {"name": "postroom-secrets", "behavior": "merge", "literals": ["POSTROOM_ADMIN_TOKEN=a-new-token"]}
        ],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = run([kubectl, "kustomize", str(overlay)])
    assert result.returncode == 0, result.stderr
    changed = pod_templates(tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc))
    before = pod_templates(render("dev"))
    for name in (f"Deployment/{deployment}" for deployment in SERVICES):
        assert references(changed[name]) & references(before[name]) == set(), name


def test_no_replica_count_where_an_autoscaler_owns_it() -> None:
    """An HPA (or KEDA's) sets the count; a count in the Deployment would reset it at every `kubectl apply`."""
    for overlay, components in [*VARIANTS, ("dev", ("keda-delivery",))]:
        docs = render(overlay, components)
        scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(docs, "HorizontalPodAutoscaler").values()}
        scaled |= {obj["spec"]["scaleTargetRef"]["name"] for obj in of_kind(docs, "ScaledObject").values()}
        assert scaled >= {"smtp-ingress", "pop3"}
        for name, deployment in of_kind(docs, "Deployment").items():
            if name in scaled:
                assert "replicas" not in deployment["spec"], (overlay, components, name)
            else:
                assert deployment["spec"]["replicas"] >= 1, (overlay, components, name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_emptydir_volumes_have_their_ephemeral_storage_requested(overlay: str) -> None:
    """The scheduler places a pod only where the node's disk has room for its spool and /tmp (and its logs)."""
    for where, pod in pod_templates(render(overlay)).items():
        sizes = {
            v["name"]: quantity(v["emptyDir"]["sizeLimit"])
            for v in pod.get("volumes", [])
            if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
        }
        for container in pod["containers"]:
            mounted = sum(sizes.get(m["name"], 0) for m in container.get("volumeMounts", []))
            if mounted:
                requested = quantity(container["resources"]["requests"]["ephemeral-storage"])
                assert requested >= mounted, (where, container["name"], requested, mounted)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dashboard_ships_as_a_configmap_for_the_grafana_sidecar(overlay: str) -> None:
    configmap = of_kind(render(overlay), "ConfigMap")["postroom-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "Postroom"
    assert configmap["data"]["postroom.json"] == DASHBOARD.read_text()
    # `kubectl apply` keeps the whole object in an annotation limited to 256 KiB.
    assert len(DASHBOARD.read_text().encode()) < 200 * 1024


def test_prod_uses_external_backends_through_the_secret() -> None:
    docs = render("prod")
    assert of_kind(docs, "StatefulSet") == {}
    secret = secret_values(docs)
    assert secret["POSTROOM_AMQP_URL"].startswith("amqps://")
    assert secret["POSTROOM_REDIS_URL"].startswith("rediss://")
    name = generated(docs, "Secret", "postroom-secrets")["metadata"]["name"]
    for deployment in of_kind(docs, "Deployment").values():
        sources = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": name}} in sources


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_budgets_and_autoscalers(overlay: str) -> None:
    docs = render(overlay)
    budgets = of_kind(docs, "PodDisruptionBudget")
    for name, deployment in of_kind(docs, "Deployment").items():
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"] == labels
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
    assert set(autoscalers) == {"smtp-ingress", "pop3"}
    for name, hpa in autoscalers.items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] >= 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mail_ports_are_load_balanced_and_keep_the_client_address(overlay: str) -> None:
    docs = render(overlay)
    services = of_kind(docs, "Service")
    deployments = of_kind(docs, "Deployment")
    for name, ports in MAIL_PORTS.items():
        service = services[name]
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["spec"]["externalTrafficPolicy"] == "Local"
        assert {p["port"] for p in service["spec"]["ports"]} == ports
        component = service["spec"]["selector"]["app.kubernetes.io/component"]
        container = deployments[component]["spec"]["template"]["spec"]["containers"][0]
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        listens = {int(e["value"].rsplit(":", 1)[1]) for e in container["env"] if e["name"].endswith("_LISTEN")}
        for port in service["spec"]["ports"]:
            target = container_ports[port["targetPort"]]
            assert target >= 1024 and target in listens, (name, port)


def test_proxy_protocol_is_a_configmap_setting_that_the_component_turns_on() -> None:
    def config(docs: tuple[Manifest, ...]) -> dict[str, str]:
        return dict(generated(docs, "ConfigMap", "postroom-config")["data"])

    for variable in ("POSTROOM_SMTP_PROXY_PROTOCOL", "POSTROOM_POP3_PROXY_PROTOCOL"):
        assert config(render("prod"))[variable] == "false"
        assert config(render("prod", ("proxy-protocol",)))[variable] == "true"
    # PROXY on without the balancer's networks stops both services at start; without PROXY none are set.
    assert "POSTROOM_PROXY_TRUSTED_NETWORKS" not in config(render("prod"))
    assert config(render("prod", ("proxy-protocol",)))["POSTROOM_PROXY_TRUSTED_NETWORKS"].strip()
    with_proxy = render("prod", ("proxy-protocol",))
    for service in ("smtp", "pop3"):
        annotations = of_kind(with_proxy, "Service")[service]["metadata"]["annotations"]
        assert annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_the_mail_ports(overlay: str) -> None:
    policies = of_kind(render(overlay), "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    opened = {
        port["port"]
        for policy in policies.values()
        for rule in policy["spec"].get("ingress", [])
        if "from" not in rule
        for port in rule["ports"]
    }
    assert opened == {2525, 2587, 2465, 2110, 2995}


def test_keda_scales_delivery_on_the_queue_the_services_use() -> None:
    from shared.topology import Topology

    docs = render("dev", ("keda-delivery",))
    (scaled,) = of_kind(docs, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "delivery"
    (trigger,) = scaled["spec"]["triggers"]
    configmap = generated(docs, "ConfigMap", "postroom-config")
    assert trigger["metadata"]["queueName"] == Topology(configmap["data"]["POSTROOM_NAMESPACE"]).incoming
    # hostFromEnv: KEDA reads the URL from the delivery container's own environment (its envFrom Secret, whatever
    # the hash in its name), so no reference to a generated name can go stale.
    assert trigger["metadata"]["hostFromEnv"] == "POSTROOM_AMQP_URL"
    assert "POSTROOM_AMQP_URL" in container_env(docs, "delivery")
    assert "TriggerAuthentication" not in {doc["kind"] for doc in docs}


@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        ("prod", {f"postroom-{name}" for name in SERVICES}),
        ("dev", {f"postroom-{name}" for name in SERVICES} | {"redis", "rabbitmq"}),
    ],
)
def test_service_monitor_scrapes_the_services_and_the_dev_backends(overlay: str, expected: set[str]) -> None:
    """Job label = Service name: postroom-*, and in dev "redis" (its exporter) and "rabbitmq", as the alerts read."""
    docs = render(overlay, ("servicemonitor",))
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        name
        for name, service in of_kind(docs, "Service").items()
        if selector.items() <= service["metadata"].get("labels", {}).items()
    }
    assert selected == expected
    port = monitor["spec"]["endpoints"][0]["port"]
    for name in selected:
        assert port in {p["name"] for p in of_kind(docs, "Service")[name]["spec"]["ports"]}


def test_monitoring_labels_component_labels_the_servicemonitor_and_rule_only() -> None:
    docs = render("prod", ("servicemonitor", "monitoring-labels"))
    labelled = {
        (doc["kind"], doc["metadata"]["name"]) for doc in docs if "release" in doc["metadata"].get("labels", {})
    }
    assert labelled == {("ServiceMonitor", "postroom"), ("PrometheusRule", "postroom")}
    for kind in ("ServiceMonitor", "PrometheusRule"):
        (doc,) = of_kind(docs, kind).values()
        assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_is_generated_from_alerts_yml() -> None:
    docs = render("prod", ("servicemonitor",))
    (rule,) = of_kind(docs, "PrometheusRule").values()
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "run: python deploy/prometheus/to_prometheusrule.py"
    )


def container_env(docs: tuple[Manifest, ...], deployment: str) -> dict[str, str]:
    """What the container sees: the ConfigMap, the Secret and its own env entries (later ones win, as in Kubernetes)."""
    configmap = generated(docs, "ConfigMap", "postroom-config")
    secret = secret_values(docs)
    container = of_kind(docs, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"][0]
    return {**configmap["data"], **secret, **{e["name"]: e["value"] for e in container["env"] if "value" in e}}


def test_dev_environment_is_accepted_by_every_service() -> None:
    docs = render("dev")
    checked = [name for name in SERVICES if check_service_env(SERVICES[name], container_env(docs, name))]
    if not checked:
        pytest.skip("no services/<name>/config.py in this checkout yet")


def test_the_proxy_protocol_component_turns_the_setting_on_in_the_services() -> None:
    """A load balancer sends PROXY headers only to a service whose settings then expect them (a *proxy_protocol*
    field that the ConfigMap turns on); one side without the other breaks every connection or hides the client."""
    docs = render("dev", ("proxy-protocol",))
    services = of_kind(docs, "Service")
    checked = 0
    for service_name, component in (("smtp", "smtp-ingress"), ("pop3", "pop3")):
        annotated = "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol" in services[service_name][
            "metadata"
        ].get("annotations", {})
        settings = service_settings(SERVICES[component], container_env(docs, component))
        if settings is None:
            continue
        checked += 1
        fields = [field for field in type(settings).model_fields if field.endswith("proxy_protocol")]
        assert all(getattr(settings, field) is True for field in fields), (component, fields)
        assert getattr(settings, "proxy_trusted_networks", None), f"{component}: PROXY on, no balancer networks"
        assert annotated == bool(fields), f"{service_name}: PROXY from the load balancer {annotated}, read {fields}"
    assert services["smtp"]["metadata"]["annotations"]
    if not checked:
        pytest.skip("no services/<name>/config.py in this checkout yet")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_postroom_variable_in_the_manifests_is_read_by_a_service(overlay: str) -> None:
    docs = render(overlay, COMPONENTS)
    variables = set().union(*(container_env(docs, name) for name in SERVICES))
    assert unknown_variables(variables) == set()


def test_dev_rabbitmq_consumer_timeout_is_set_above_the_delivery_deadline() -> None:
    from tests.deploy.test_compose import consumer_timeout_seconds, delivery_holds_at_most

    [config] = [c for name, c in of_kind(render("dev"), "ConfigMap").items() if name.startswith("rabbitmq-config")]
    assert consumer_timeout_seconds(config["data"]["20-postroom.conf"]) > delivery_holds_at_most()
