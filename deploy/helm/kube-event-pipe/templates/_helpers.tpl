{{/* The objects' name: the release name, or the chart's name inside it. */}}
{{- define "kube-event-pipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kube-event-pipe.fullname" -}}
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

{{- define "kube-event-pipe.namespace" -}}
{{- default .Release.Namespace .Values.namespace.name }}
{{- end }}

{{- define "kube-event-pipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-event-pipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-event-pipe.labels" -}}
{{ include "kube-event-pipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "kube-event-pipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-event-pipe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Lease the replicas elect a leader through (HA mode): ha.leaseName, else the full name. */}}
{{- define "kube-event-pipe.leaseName" -}}
{{- default (include "kube-event-pipe.fullname" .) .Values.ha.leaseName }}
{{- end }}

{{- define "kube-event-pipe.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The sink names for KUBE_EVENT_PIPE_SINK, in the pipe's order. */}}
{{- define "kube-event-pipe.sinks" -}}
{{- $sinks := list }}
{{- range $name := list "stdout" "file" "s3" "kafka" "otlp" "http" }}
{{- if (index $.Values.sinks $name).enabled }}
{{- $sinks = append $sinks $name }}
{{- end }}
{{- end }}
{{- if not $sinks }}
{{- fail "sinks: enable at least one sink (sinks.stdout.enabled, sinks.file.enabled, sinks.s3.enabled, ...)" }}
{{- end }}
{{- join "," $sinks }}
{{- end }}

{{/*
Natural logarithm of a positive float, for the filter size: Sprig has no log. x = m × 10^e
with m in [1, 10) (from printf %e), ln x = e × ln 10 + 2 atanh((m - 1) / (m + 1)), the series
summed to 60 odd terms: |y| < 0.82, so the remainder is below 1e-10.
*/}}
{{- define "kube-event-pipe.ln" -}}
{{- $parts := splitList "e" (printf "%e" (float64 .)) }}
{{- $m := float64 (index $parts 0) }}
{{- $e := atoi (index $parts 1) }}
{{- $y := divf (subf $m 1.0) (addf $m 1.0) }}
{{- $y2 := mulf $y $y }}
{{- $term := $y }}
{{- $sum := 0.0 }}
{{- range $i := until 60 }}
{{- $sum = addf $sum (divf $term (add (mul 2 $i) 1)) }}
{{- $term = mulf $term $y2 }}
{{- end }}
{{- addf (mulf $e 2.302585092994046) (mulf 2.0 $sum) }}
{{- end }}

{{/*
The filters' claim size: (generations + 1) files (a new one is synced before the oldest goes),
each 128 + bits/8 bytes with bits = ceil(-capacity × ln(rate) / ln(2)²), doubled for
quarantined copies, in whole GiB, at least 1Gi.
*/}}
{{- define "kube-event-pipe.filterStorage" -}}
{{- if .Values.persistence.size }}
{{- .Values.persistence.size }}
{{- else }}
{{- $ln := float64 (include "kube-event-pipe.ln" .Values.filter.errorRate) }}
{{- $bits := ceil (divf (mulf -1.0 (float64 .Values.filter.capacity) $ln) 0.4804530139182014) }}
{{- $bytes := addf 128.0 (divf $bits 8.0) }}
{{- $total := mulf $bytes (add .Values.filter.generations 1) 2.0 }}
{{- $gib := ceil (divf $total 1073741824.0) | int }}
{{- printf "%dGi" (max $gib 1) }}
{{- end }}
{{- end }}
