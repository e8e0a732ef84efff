"""How the operator scales: N FineTuneJobs through their whole lifecycle against the mock API server.

The operator runs as its own process (`kubetune operator`), so its RSS is its own; the mock API
server and the kubelet helper run here. For each N it prints: time until every Job exists, the
create->Job latency (p50/p99), API requests per FineTuneJob lifecycle (counted at the mock, by
verb and resource) beside the minimum the design needs, and the operator's RSS.

    .venv/bin/python bench/operator_scale.py 10 100 500
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.kube.kubelet import KUBELET_AGENT, Kubelet  # noqa: E402
from tests.support.kube.server import FTJ, MockCluster  # noqa: E402

NS = "default"
# What one lifecycle (create -> Job -> Running -> Succeeded -> delete) needs at the least:
MINIMUM = {
    "create configmap, pvc, serviceaccount, role, rolebinding, job": 6,
    "status writes (Pending, Running, Succeeded)": 3,
    "events (JobCreated, Started, Succeeded)": 3,
    "finalizer add + remove": 2,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _finetunejob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "baseModel": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
            "dataset": {"hf": {"name": "org/facts"}, "format": "qa"},
            "resources": {"gpus": 1},
        },
    }


def _rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


class Timeline:
    """Watches the store (observer hook) and timestamps what the benchmark measures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ftj_created: dict[str, float] = {}
        self.job_created: dict[str, float] = {}
        self.succeeded: set[str] = set()
        self.deleted: set[str] = set()
        self.jobs: queue.Queue[str] = queue.Queue()

    def __call__(self, kind: Any, event: str, obj: dict[str, Any]) -> None:
        now = time.perf_counter()
        name = obj["metadata"]["name"]
        with self.lock:
            if kind.plural == "finetunejobs":
                if event == "ADDED":
                    self.ftj_created[name] = now
                elif event == "DELETED":
                    self.deleted.add(name)
                elif (obj.get("status") or {}).get("phase") == "Succeeded":
                    self.succeeded.add(name)
            elif kind.plural == "jobs" and event == "ADDED":
                owner = obj["metadata"]["labels"]["kubetune.dev/finetunejob"]
                self.job_created[owner] = now
                self.jobs.put(obj["metadata"]["name"])


def _play_kubelet(cluster: MockCluster, timeline: Timeline, count: int, stop: threading.Event) -> None:
    """Each Job: start its pod, report metrics as the trainer would, finish with success."""
    kubelet = Kubelet(cluster.client(KUBELET_AGENT))
    trainer = cluster.client("kubetune-trainer/bench")
    done = 0
    while done < count and not stop.is_set():
        try:
            job = timeline.jobs.get(timeout=0.5)
        except queue.Empty:
            continue
        kubelet.start_job(NS, job)
        owner = job.removesuffix("-train")
        trainer.patch(FTJ, NS, owner, {"status": {"metrics": {"trainLoss": 1.0}}}, "status")
        kubelet.finish_job(NS, job, 0, '{"reason": "Completed"}')
        done += 1


def _wait(predicate: Any, timeout: float, what: str) -> float:
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)
    return time.perf_counter()


def run(count: int, timeout: float, validate: bool) -> dict[str, Any]:
    with MockCluster(validate=validate) as cluster, tempfile.TemporaryDirectory() as tmp:
        timeline = Timeline()
        cluster.state.observers.append(timeline)
        kubeconfig = cluster.write_kubeconfig(Path(tmp) / "kubeconfig")
        liveness = _free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KUBETUNE_METRICS_PORT": "0",
            "KUBETUNE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{liveness}/healthz",
        }
        operator = subprocess.Popen(
            [sys.executable, "-m", "kubetune.cli", "operator", "--namespace", NS],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "operator.log", "w"),  # noqa: SIM115
        )
        try:
            watched = {"finetunejobs", "modelserves", "jobs", "deployments", "services"}
            _wait(lambda: watched <= {c.resource for c in cluster.recorder.of() if c.verb == "watch"}, 60, "watches")
            baseline = len(cluster.recorder.of())
            rss_idle, _ = _rss_kib(operator.pid)
            stop = threading.Event()
            kubelet = threading.Thread(target=_play_kubelet, args=(cluster, timeline, count, stop), daemon=True)
            kubelet.start()
            client = cluster.client()
            started = time.perf_counter()
            for index in range(count):
                client.create(FTJ, NS, _finetunejob(f"job-{index:04d}"))
            created = time.perf_counter()
            all_jobs = _wait(lambda: len(timeline.job_created) >= count, timeout, "all Jobs")
            all_done = _wait(lambda: len(timeline.succeeded) >= count, timeout, "all FineTuneJobs to succeed")
            rss_busy, rss_peak = _rss_kib(operator.pid)
            for index in range(count):
                client.delete(FTJ, NS, f"job-{index:04d}")
            all_gone = _wait(lambda: len(timeline.deleted) >= count, timeout, "all FineTuneJobs to be deleted")
            time.sleep(1.0)  # let trailing requests (if any) land before counting
            stop.set()
            calls = cluster.recorder.of()[baseline:]
            if os.environ.get("BENCH_TRACE"):
                for call in calls:
                    if call.namespace == NS:
                        print("   ", call.agent.split("/")[0], call.verb, call.resource, call.subresource)
            latencies = sorted(timeline.job_created[n] - timeline.ftj_created[n] for n in timeline.job_created)
            by_permission = Counter(" ".join(filter(None, c.permission)) for c in calls)
            return {
                "n": count,
                "create_s": created - started,
                "all_jobs_s": all_jobs - started,
                "all_succeeded_s": all_done - started,
                "all_deleted_s": all_gone - all_done,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                "requests_per_lifecycle": len(calls) / count,
                "breakdown": {key: value / count for key, value in by_permission.most_common()},
                "rss_idle_mib": rss_idle / 1024,
                "rss_busy_mib": rss_busy / 1024,
                "rss_peak_mib": rss_peak / 1024,
            }
        finally:
            operator.terminate()
            operator.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 100])
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per phase")
    parser.add_argument("--validate", action="store_true", help="also validate every manifest (slower)")
    args = parser.parse_args(argv)
    minimum = sum(MINIMUM.values())
    print(f"minimum API requests per lifecycle: {minimum} (" + ", ".join(f"{k}: {v}" for k, v in MINIMUM.items()) + ")")
    for count in args.sizes:
        result = run(count, args.timeout, args.validate)
        per_job_ms = result["all_jobs_s"] / count * 1000
        print(
            f"N={count:4d}  all Jobs created {result['all_jobs_s']:7.2f} s ({per_job_ms:6.1f} ms/job)"
            f"  create->Job p50 {result['p50_ms']:7.1f} ms p99 {result['p99_ms']:7.1f} ms"
            f"  all succeeded {result['all_succeeded_s']:7.2f} s  all deleted +{result['all_deleted_s']:6.2f} s"
        )
        ratio = result["requests_per_lifecycle"] / minimum
        print(
            f"        requests/lifecycle {result['requests_per_lifecycle']:.1f} (minimum {minimum}, ratio {ratio:.2f})"
            f"  operator RSS idle {result['rss_idle_mib']:.0f} MiB, "
            f"busy {result['rss_busy_mib']:.0f} MiB, peak {result['rss_peak_mib']:.0f} MiB"
        )
        print("        per lifecycle: " + ", ".join(f"{k} {v:.2f}" for k, v in result["breakdown"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
