"""Kustomize overlays and components: they render, validate against Kubernetes' schemas offline, and hold our rules."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.queries import ALERTS, ROOT
from tests.deploy.settings_check import check_service_env, service_settings, unknown_variables
from tests.deploy.tools import require, run

KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
COMPONENTS = ("keda-delivery", "servicemonitor", "proxy-protocol", "tls")
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


def test_prod_uses_external_backends_through_the_secret() -> None:
    docs = render("prod")
    assert of_kind(docs, "StatefulSet") == {}
    secret = of_kind(docs, "Secret")["postroom-secrets"]["stringData"]
    assert secret["POSTROOM_AMQP_URL"].startswith("amqps://")
    assert secret["POSTROOM_REDIS_URL"].startswith("rediss://")
    for deployment in of_kind(docs, "Deployment").values():
        sources = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": "postroom-secrets"}} in sources


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
        (configmap,) = of_kind(docs, "ConfigMap").values()
        return dict(configmap["data"])

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
    (configmap,) = of_kind(docs, "ConfigMap").values()
    assert trigger["metadata"]["queueName"] == Topology(configmap["data"]["POSTROOM_NAMESPACE"]).incoming
    auth = of_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["name"] in of_kind(docs, "Secret") and ref["key"] == "POSTROOM_AMQP_URL"


def test_service_monitor_scrapes_the_four_metrics_services() -> None:
    docs = render("prod", ("servicemonitor",))
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        name
        for name, service in of_kind(docs, "Service").items()
        if selector.items() <= service["metadata"].get("labels", {}).items()
    }
    assert selected == {f"postroom-{name}" for name in SERVICES}
    port = monitor["spec"]["endpoints"][0]["port"]
    for name in selected:
        assert port in {p["name"] for p in of_kind(docs, "Service")[name]["spec"]["ports"]}


def test_prometheus_rule_is_generated_from_alerts_yml() -> None:
    docs = render("prod", ("servicemonitor",))
    (rule,) = of_kind(docs, "PrometheusRule").values()
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "run: python deploy/prometheus/to_prometheusrule.py"
    )


def container_env(docs: tuple[Manifest, ...], deployment: str) -> dict[str, str]:
    """What the container sees: the ConfigMap, the Secret and its own env entries (later ones win, as in Kubernetes)."""
    (configmap,) = of_kind(docs, "ConfigMap").values()
    secret = of_kind(docs, "Secret")["postroom-secrets"]["stringData"]
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
