{{/* Names and labels. With release name "kubetune" they equal the kustomize base's, which a test checks. */}}

{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubetune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the operator's Deployment, ServiceAccount, roles and bindings. */}}
{{- define "kubetune.operatorName" -}}
{{- printf "%s-operator" (include "kubetune.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubetune.labels" -}}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/part-of: kubetune
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* repository:tag[@digest], the tag defaulting to the chart's appVersion. Argument: the image values. */}}
{{- define "kubetune.image" -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- with .image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/*
RBAC rules the operator needs inside every namespace it handles. Rendered into the cluster-wide ClusterRole or
into one Role per watched namespace. Keep in step with deploy/kustomize (a test compares the renderings).
*/}}
{{- define "kubetune.namespacedRules" -}}
# Events on the custom resources: the operator's steps (JobCreated, Started, Succeeded, ...) and kopf's errors.
# Read while a FineTuneJob is Pending, to show why: listed by the uid of one trainer Job or pod, and the Job
# controller's FailedCreate (a quota or PodSecurity refused the pod) watched by field selector; FailedMount.
- apiGroups: [""]
  resources: [events]
  verbs: [create, list, watch]
# The same Events through events.k8s.io: a second watch, for a kubelet's FailedMount on a trainer pod (field
# selector regarding.kind=Pod,reason=FailedMount; one watch can hold only one selector per API).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [list, watch]
# The custom resources: kopf lists and watches them and keeps its annotations on them (patch; no finalizer);
# the operator reads one again before each step, and a ModelServe's FineTuneJobs (get).
- apiGroups: [kubetune.dev]
  resources: [finetunejobs, modelserves]
  verbs: [get, list, watch, patch]
# Not a call: the OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened clusters) lets a
# child name its FineTuneJob or ModelServe with blockOwnerDeletion only if its creator may update the owner's
# finalizers. Without this, every child the operator creates is refused there (tests/cluster proves it).
- apiGroups: [kubetune.dev]
  resources: [finetunejobs/finalizers, modelserves/finalizers]
  verbs: [update]
# Status is written by the operator only (patch); the trainer reports to its own ConfigMap, never to the status.
- apiGroups: [kubetune.dev]
  resources: [finetunejobs/status]
  verbs: [patch]
- apiGroups: [kubetune.dev]
  resources: [modelserves/status]
  verbs: [patch]
# The trainer Job: created, followed, suspended and resumed (patch). Never deleted: the garbage collector does
# that with its FineTuneJob (ownerReference), as the deletion's propagation policy says.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
# Kueue Workloads of queued trainer Jobs (spec.queueName only): listed by Kueue's job-uid label and deactivated
# or activated again (patch spec.active), Kueue's documented way to stop a queued job, when a FineTuneJob is
# suspended or resumed. The operator never creates, deletes or admits one.
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, patch]
# Trainer pods are only read: for the termination message (final metrics, failure reason), and watched (by
# label) because a pod that is Unschedulable or cannot pull its image changes no Job status the operator sees.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The server Deployment of a ModelServe: created, watched for readiness, repaired or updated (patch).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# The server Service: created, watched, and repaired or updated (patch).
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch]
# ConfigMaps: a FineTuneJob's validated spec (create), its trainer's report (create; read to copy
# validated progress and metrics into the status; get+patch on it is what the per-job trainer Role grants,
# which RBAC allows the operator to create only because it holds those verbs itself) and a server's
# serve.json (get, create, patch to hot-add adapters). The operator's own are watched (label selector
# app.kubernetes.io/managed-by=kubetune-operator) so that reconciles read them from memory, and one
# deleted under its owner is re-created at once.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
# A FineTuneJob's output claim and trainer ServiceAccount, and the trainer's Role and RoleBinding: created once,
# never changed; garbage collection deletes them with their FineTuneJob. Watched (label selector
# kubetune.dev/finetunejob) and read from memory to check an existing one's controller reference (never adopting
# someone else's) and to re-create one deleted under a running job; get when the watch has not delivered it yet.
- apiGroups: [""]
  resources: [persistentvolumeclaims, serviceaccounts]
  verbs: [get, list, watch, create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create]
{{- end }}
