"""A mock Kubernetes API (kmock) without a cluster: fast, with faults on demand, but no judge of Kubernetes
behaviour. Scenario, install and RBAC claims are proven on the real control plane (tests/support/envtest,
tests/cluster); the mock remains for its own tests, the trainer's status-reporting tests and
bench/operator_scale.py. The kubelet and hostrun helpers here serve both.

- `server.MockCluster`: kmock 0.8 plus the realism layer (`mock`, `state`): uids, resourceVersions,
  generation, status subresource, resumable JSON watches, 409/422/410 like the real server, namespaces,
  finalizers, garbage collection by ownerReferences. `KubeTestClient` talks to it synchronously.
- `validation.ManifestValidator`: rejects (422) and records invalid writes of the operator
  (kubernetes-validate 1.30 for built-ins, the CRD schema for kubetune status); spec writes are flagged.
- `recorder.ApiRequestRecorder`: every request as (verb, apiGroup, resource[/subresource]) by user agent;

- `kubelet.Kubelet`: plays the Job and Deployment controllers step by step, or runs a pod's real
  command on the host (`run_job`, `serve_deployment`, built on `hostrun`).
- `fixtures`: pytest fixtures (`cluster`, `kube`, `kubelet`, `operator`); reuse them
  with `from tests.support.kube.fixtures import *` in a conftest.
"""
