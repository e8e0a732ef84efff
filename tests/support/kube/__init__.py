"""A Kubernetes API without a cluster, for operator and end-to-end tests.

- `server.MockCluster`: kmock 0.8 plus the realism layer (`mock`, `state`): uids, resourceVersions,
  generation, status subresource, resumable JSON watches, 409/422/410 like the real server, namespaces,
  finalizers, garbage collection by ownerReferences. `KubeTestClient` talks to it synchronously.
- `validation.ManifestValidator`: rejects (422) and records invalid writes of the operator
  (kubernetes-validate 1.30 for built-ins, the CRD schema for kubetune status); spec writes are flagged.
- `recorder.ApiRequestRecorder`: every request as (verb, apiGroup, resource[/subresource]) by user agent;
  KUBETUNE_API_REQUESTS_FILE=path makes the test session write the operator's set as JSON.
- `kubelet.Kubelet`: plays the Job and Deployment controllers step by step, or runs a pod's real
  command on the host (`run_job`, `serve_deployment`, built on `hostrun`).
- `fixtures`: pytest fixtures (`cluster`, `kube`, `kubelet`, `operator`, `api_permissions`); reuse them
  with `from tests.support.kube.fixtures import *` in a conftest.
"""
