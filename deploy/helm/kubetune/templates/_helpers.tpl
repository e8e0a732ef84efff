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

{{/* repository:tag, the tag defaulting to the chart's appVersion. Argument: the image values. */}}
{{- define "kubetune.image" -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}

{{/*
RBAC rules the operator needs inside every namespace it handles. Rendered into the cluster-wide ClusterRole or
into one Role per watched namespace. Keep in step with deploy/kustomize (a test compares the renderings).
*/}}
{{- define "kubetune.namespacedRules" -}}
# kopf: handler errors and the operator's own progress as Events on the custom resources.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# The custom resources: kopf lists and watches them and keeps its finalizer and annotations on them (patch);
# the operator reads a FineTuneJob again before each step and when a ModelServe refers to it (get).
- apiGroups: [kubetune.dev]
  resources: [finetunejobs]
  verbs: [get, list, watch, patch]
- apiGroups: [kubetune.dev]
  resources: [modelserves]
  verbs: [list, watch]
# Status is written by the operator (patch). get+patch is also exactly what the per-job trainer Role grants
# on its own FineTuneJob: RBAC lets the operator create that Role only because it holds these verbs itself.
- apiGroups: [kubetune.dev]
  resources: [finetunejobs/status]
  verbs: [get, patch]
# The trainer Job: created, watched for its phase, suspended/resumed (patch).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
# Trainer pods are only read, for the termination message (final metrics, failure reason).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# The server Deployment and Service of a ModelServe: watched for readiness.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch]
# Children created once per FineTuneJob (spec ConfigMap, output claim, trainer ServiceAccount) and the trainer's
# Role and RoleBinding. Create only: they are never changed, and garbage collection deletes them with their owner.
- apiGroups: [""]
  resources: [configmaps, persistentvolumeclaims, serviceaccounts]
  verbs: [create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create]
{{- end }}

{{/* Annotations that let Argo CD create a peering object in the same sync as its CRD. */}}
{{- define "kubetune.peeringAnnotations" -}}
argocd.argoproj.io/sync-wave: "1"
argocd.argoproj.io/sync-options: SkipDryRunOnMissingResource=true
{{- end }}
