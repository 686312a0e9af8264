{{/*
Full image reference. Call as: include "pseven.image" (list $ .Values.image.appserver)
The value is a string "host/repo[:tag][@digest]" or a map {registry?, repository, tag?, digest?}.
When there is no tag (and no digest), the chart appVersion is appended.
*/}}
{{- define "pseven.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- if kindIs "map" $img -}}
  {{- $ref := $img.repository -}}
  {{- if $img.registry -}}{{- $ref = printf "%s/%s" $img.registry $img.repository -}}{{- end -}}
  {{- if $img.tag -}}{{- $ref = printf "%s:%v" $ref $img.tag -}}
  {{- else if not $img.digest -}}{{- $ref = printf "%s:%s" $ref $root.Chart.AppVersion -}}
  {{- end -}}
  {{- if $img.digest -}}{{- $ref = printf "%s@%s" $ref $img.digest -}}{{- end -}}
  {{- $ref -}}
{{- else if or (contains "@" $img) (contains ":" (last (splitList "/" $img))) -}}
  {{- $img -}}
{{- else -}}
  {{- printf "%s:%s" $img $root.Chart.AppVersion -}}
{{- end -}}
{{- end -}}

{{- define "pseven.labels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: pseven
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "pseven.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "pseven.pullSecrets" -}}
imagePullSecrets:
  - name: {{ .Release.Name }}-registry
{{- end -}}
