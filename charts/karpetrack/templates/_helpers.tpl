{{/* Names are cut at 63 characters because label values and most resource names may not be longer. */}}
{{- define "karpetrack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "karpetrack.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if eq .Release.Name (include "karpetrack.name" .) -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "karpetrack.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "karpetrack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "karpetrack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "karpetrack.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | quote }}
{{ include "karpetrack.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "karpetrack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "karpetrack.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is needed when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A digest pins the image even when a tag is given too: tags move, digests do not. */}}
{{- define "karpetrack.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" or empty. Two replicas without a lease would both recommend and, worse, both act; an actor
(approve, auto) always takes the lease, whatever replicaCount says, so that a second pod (a scale-up,
an upgrade, a pod the kubelet has not yet seen die) waits instead of acting beside it. */}}
{{- define "karpetrack.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) (include "karpetrack.actuationWrites" .) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the actuator writes to the cluster and to Spot (approve, auto); dry-run only logs. */}}
{{- define "karpetrack.actuationWrites" -}}
{{- if or (eq .Values.actuation.mode "approve") (eq .Values.actuation.mode "auto") -}}true{{- end -}}
{{- end -}}

{{/* The Lease the app elects its leader on (fixed in the app: Actuation/ActuationWiring.cs). */}}
{{- define "karpetrack.leaseName" -}}karpetrack{{- end -}}

{{- define "karpetrack.actuationOn" -}}
{{- if ne .Values.actuation.mode "off" -}}true{{- end -}}
{{- end -}}

{{/* The Secret the credentials come from, or empty when there are none (the exporter alone needs none). */}}
{{- define "karpetrack.credentialsSecret" -}}
{{- if .Values.credentials.existingSecret -}}
{{- .Values.credentials.existingSecret -}}
{{- else if .Values.credentials.refreshToken -}}
{{- printf "%s-credentials" (include "karpetrack.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
