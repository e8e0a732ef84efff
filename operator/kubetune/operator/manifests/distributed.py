"""Several trainer processes: one per GPU (torchrun in the pod), and one pod per node (an Indexed Job).

A multi-node run is an Indexed Job with `completions = parallelism = nodes`: the Job controller gives each pod its
completion index (the node rank, env JOB_COMPLETION_INDEX) and the host name `<job>-<index>`; a headless Service
(`subdomain`) makes pod 0 reachable as `<job>-0.<service>`, where torchrun's static rendezvous meets. The pods must
run at the same time: Kueue admits an Indexed Job's pods as one Workload (all or none); without it the scheduler
places them one by one and the first ones wait in the rendezvous until the others start.
"""

from __future__ import annotations

from typing import Any

from kubetune.api import runtime
from kubetune.api.finetunejob import FineTuneJobSpec

from .. import naming
from . import pod
from .meta import Owner, object_meta

RENDEZVOUS_PORT_NAME = "rendezvous"


def processes_per_node(spec: FineTuneJobSpec) -> int:
    """One trainer process per GPU; one on CPU."""
    return max(spec.resources.gpus, 1)


def is_distributed(spec: FineTuneJobSpec) -> bool:
    return spec.resources.nodes > 1 or processes_per_node(spec) > 1


def master_address(owner: Owner) -> str:
    """Pod 0 of the Indexed Job, by its host name in the headless Service's subdomain."""
    return f"{naming.job_name(owner.name)}-0.{naming.rendezvous_service(owner.name)}"


def launch_env(owner: Owner, spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """What `python -m kubetune_trainer.launch` reads to start torchrun."""
    env = [
        pod.env_value(runtime.ENV_NODES, str(spec.resources.nodes)),
        pod.env_value(runtime.ENV_PROCS_PER_NODE, str(processes_per_node(spec))),
    ]
    if spec.resources.nodes > 1:
        env += [
            pod.env_value(runtime.ENV_MASTER_ADDR, master_address(owner)),
            pod.env_value(runtime.ENV_MASTER_PORT, str(runtime.RENDEZVOUS_PORT)),
        ]
    return env


def rendezvous_service(owner: Owner, labels: dict[str, str]) -> dict[str, Any]:
    """Headless Service over the run's pods; their addresses are published before they are ready (rendezvous)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(naming.rendezvous_service(owner.name), owner, labels),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {naming.JOB_NAME_LABEL: naming.job_name(owner.name)},
            "ports": [{"name": RENDEZVOUS_PORT_NAME, "port": runtime.RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }


def as_indexed(job_spec: dict[str, Any], owner: Owner, nodes: int) -> dict[str, Any]:
    """`job_spec` run on `nodes` pods at once, each knowing its rank and finding pod 0."""
    template = dict(job_spec["template"])
    template["spec"] = {**template["spec"], "subdomain": naming.rendezvous_service(owner.name)}
    return {**job_spec, "completionMode": "Indexed", "completions": nodes, "parallelism": nodes, "template": template}
