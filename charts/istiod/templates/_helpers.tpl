{{/* The revision suffix: "" for the default revision, "-<rev>" otherwise. */}}
{{- define "istiod.revSuffix" -}}
{{- if and .Values.revision (ne (toString .Values.revision) "default") }}-{{ .Values.revision }}{{ end -}}
{{- end }}

{{/* Name of the Deployment, Service, ServiceAccount and Role: istiod[-<rev>]. */}}
{{- define "istiod.name" -}}
istiod{{ include "istiod.revSuffix" . }}
{{- end }}

{{/* The value of the istio.io/rev label. */}}
{{- define "istiod.rev" -}}
{{ .Values.revision | default "default" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "istiod.labels" -}}
app: istiod
release: {{ .Release.Name | quote }}
istio.io/rev: {{ include "istiod.rev" . | quote }}
app.kubernetes.io/name: istiod
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/part-of: istio
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end }}

{{/* The pod selector: app plus istio.io/rev. */}}
{{- define "istiod.selector" -}}
app: istiod
istio.io/rev: {{ include "istiod.rev" . | quote }}
{{- end }}

{{/* The container image. A reference containing "/" is used verbatim; otherwise
<hub>/<image>:<tag>[-<variant>], each falling back to global. */}}
{{- define "istiod.image" -}}
{{- $image := toString (.Values.image | default "istio-pilot") -}}
{{- if contains "/" $image -}}
{{ $image }}
{{- else -}}
{{- $hub := toString (.Values.hub | default .Values.global.hub) -}}
{{- $tag := toString (.Values.tag | default .Values.global.tag | default .Chart.AppVersion) -}}
{{- $variant := toString (.Values.variant | default .Values.global.variant) -}}
{{ $hub }}/{{ $image }}:{{ $tag }}{{ if $variant }}-{{ $variant }}{{ end }}
{{- end -}}
{{- end }}

{{/* imagePullSecrets entries; each may be a name or an object with a name. */}}
{{- define "istiod.pullSecrets" -}}
{{- range .Values.global.imagePullSecrets }}
{{- if kindIs "map" . }}
- name: {{ required "global.imagePullSecrets: an entry has no name" .name | quote }}
{{- else }}
- name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
