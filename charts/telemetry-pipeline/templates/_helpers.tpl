{{/*
Name of every object of the release: fullnameOverride, else "<release>-operator"
(`helm install telemetry ...` gives "telemetry-operator").
*/}}
{{- define "telemetry-pipeline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding) and of the
Roles in watched namespaces: the release namespace is part of it, so two
releases of the same name in different namespaces do not collide.
*/}}
{{- define "telemetry-pipeline.scopedName" -}}
{{- printf "%s-%s" .Release.Namespace (include "telemetry-pipeline.fullname" .) -}}
{{- end -}}

{{/* Labels that select the operator pods. */}}
{{- define "telemetry-pipeline.selectorLabels" -}}
app.kubernetes.io/name: telemetry-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "telemetry-pipeline.labels" -}}
{{ include "telemetry-pipeline.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: telemetry-pipeline
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "telemetry-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "telemetry-pipeline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The leader-election Lease (in the release namespace). */}}
{{- define "telemetry-pipeline.leaseName" -}}
{{- default (include "telemetry-pipeline.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "telemetry-pipeline.operatorImage" -}}
{{- printf "%s:%s" .Values.image.operator.repository (default .Chart.AppVersion .Values.image.operator.tag) -}}
{{- end -}}

{{- define "telemetry-pipeline.ingestImage" -}}
{{- printf "%s:%s" .Values.image.ingest.repository (default .Chart.AppVersion .Values.image.ingest.tag) -}}
{{- end -}}

{{/*
Whether the Prometheus Operator objects are rendered: enabled, and the cluster
serves monitoring.coreos.com/v1 or force is set. Call with (list $ .Values.monitoring.X).
*/}}
{{- define "telemetry-pipeline.monitoringOn" -}}
{{- $root := index . 0 -}}
{{- $v := index . 1 -}}
{{- if and $v.enabled (or $v.force ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{/*
The RBAC rules for the pipelines and their children, the same for the
ClusterRole (all namespaces) and for each watched namespace's Role. Each verb
is one the operator uses (docs/helm.md#rbac says where).
*/}}
{{- define "telemetry-pipeline.rules" -}}
- apiGroups: [telemetrypipeline.io]
  resources: [telemetrypipelines]
  verbs: [list, watch]
- apiGroups: [telemetrypipeline.io]
  resources: [telemetrypipelines/status]
  verbs: [patch]
- apiGroups: [telemetrypipeline.io]
  resources: [telemetrypipelines/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [services, configmaps, secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
