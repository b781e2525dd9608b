{{/* Chart name, overridable. */}}
{{- define "ingest.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed with the chart name unless it contains it. */}}
{{- define "ingest.fullname" -}}
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

{{- define "ingest.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels used to select the pods; never change them on an existing release. */}}
{{- define "ingest.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ingest.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ingest.labels" -}}
helm.sh/chart: {{ include "ingest.chart" . }}
{{ include "ingest.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: ingest
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ingest.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ingest.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret whose keys become environment variables; empty for none. */}}
{{- define "ingest.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else if .Values.secret.create }}
{{- include "ingest.fullname" . }}
{{- end }}
{{- end }}

{{/* The `config` value as a map (it may also be given as the text of config.yaml). */}}
{{- define "ingest.configMap" -}}
{{- if kindIs "string" .Values.config }}
{{- .Values.config | fromYaml | toJson }}
{{- else }}
{{- .Values.config | toJson }}
{{- end }}
{{- end }}

{{/* The HTTP port, taken from config.server.listen ("host:port"). */}}
{{- define "ingest.port" -}}
{{- $config := include "ingest.configMap" . | fromJson }}
{{- $listen := toString (dig "server" "listen" "0.0.0.0:9464" $config) }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if not $port }}
{{- fail (printf "config.server.listen (%q) must end in a literal port number" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* config.yaml: the `config` value as YAML, or as given when it is a string. */}}
{{- define "ingest.configYaml" -}}
{{- if kindIs "string" .Values.config }}
{{- .Values.config | trimSuffix "\n" }}
{{- else }}
{{- toYaml .Values.config }}
{{- end }}
{{- end }}

{{/* config.server.drain_timeout in whole seconds (45 when not set). Only seconds and
minutes are read ("45s", "2m"), enough to check it against terminationGracePeriodSeconds. */}}
{{- define "ingest.drainSeconds" -}}
{{- $config := include "ingest.configMap" . | fromJson }}
{{- $drain := toString (dig "server" "drain_timeout" "45s" $config) }}
{{- if regexMatch "^[0-9]+s$" $drain }}
{{- trimSuffix "s" $drain }}
{{- else if regexMatch "^[0-9]+m$" $drain }}
{{- mul (trimSuffix "m" $drain | int) 60 }}
{{- else }}
{{- fail (printf "config.server.drain_timeout (%q): write it in seconds or minutes (45s, 2m) so the chart can check terminationGracePeriodSeconds against it" $drain) }}
{{- end }}
{{- end }}

{{/* Whether an autoscaler (HPA or KEDA) owns the replica count. */}}
{{- define "ingest.autoscaled" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "enable either autoscaling (an HPA on CPU) or keda (which makes its own HPA), not both" }}
{{- end }}
{{- if or .Values.autoscaling.enabled .Values.keda.enabled }}true{{ end }}
{{- end }}
