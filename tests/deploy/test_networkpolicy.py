"""The optional NetworkPolicies select the pods the operator actually creates, on the ports they use."""

from __future__ import annotations

from kubetune.api import runtime
from kubetune.operator.manifests.meta import Owner
from kubetune.operator.manifests.server import server_labels
from kubetune.operator.manifests.trainer import trainer_labels

from . import render

OWNER = Owner("kubetune.dev/v1alpha1", "FineTuneJob", "sentiment", "team-a", "uid-1")


def _policies() -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in render.kustomize(render.DEPLOY / "networkpolicy")}


def test_server_policy_selects_server_pods_only():
    policy = _policies()["kubetune-server-ingress"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= server_labels(OWNER).items()
    assert not selector.items() <= trainer_labels(OWNER).items()
    clients, operator = policy["spec"]["ingress"]
    assert clients["ports"] == operator["ports"] == [{"protocol": "TCP", "port": runtime.SERVER_PORT}]
    assert clients["from"] == [{"namespaceSelector": {"matchLabels": {"kubetune.dev/model-access": "true"}}}]
    # The operator asks each server which adapters it loaded (GET /adapters): its own pods, in its namespace.
    (source,) = operator["from"]
    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kubetune"}
    operator_pods = render.kustomize(render.DEPLOY / "kustomize" / "base")
    deployment = next(m for m in operator_pods if m["kind"] == "Deployment")
    assert source["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_trainer_policy_allows_only_dns_and_https():
    policy = _policies()["kubetune-trainer-egress"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= trainer_labels(OWNER).items()
    assert not selector.items() <= server_labels(OWNER).items()
    assert policy["spec"]["policyTypes"] == ["Egress"]
    ports = sorted((port["protocol"], port["port"]) for rule in policy["spec"]["egress"] for port in rule["ports"])
    assert ports == [("TCP", 53), ("TCP", 443), ("UDP", 53)]
    dns_rule = next(rule for rule in policy["spec"]["egress"] if "to" in rule)
    assert {p["port"] for p in dns_rule["ports"]} == {53}
