{{/*
Image reference from the {repository, tag} map; the tag defaults to this chart's appVersion.
*/}}
{{- define "pseven-cache.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}
