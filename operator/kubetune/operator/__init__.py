"""The kubetune operator: FineTuneJob -> trainer Job, ModelServe -> server Deployment (kopf).

Layers, outermost first: `handlers` (thin kopf glue) -> `services` (read children, apply the plan,
write status) -> `reconcile` (pure decisions, no Kubernetes import) and `manifests` (pure builders);
`kube` is the only module that talks to the API server.
"""
