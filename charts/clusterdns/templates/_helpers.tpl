{{/*
Labels on every object, as deploy/'s kustomizations add them (metadata only, never selectors).
*/}}
{{- define "clusterdns.labels" -}}
app.kubernetes.io/part-of: clusterdns
{{- end }}

{{/*
The name of a Corefile's ConfigMap: <name>-<hash>, computed as kustomize's configMapGenerator
does, so the chart and deploy/ name the same Corefile alike and a Corefile change rolls the pods:
the sha256 of the JSON of kind, name and data, its first ten hex digits with 0, 1, 3, a and e
swapped for letters. The name in that JSON is empty: kustomize's hasher looks it up under the
path "metadata/name" as one field name and finds nothing (charts/chart_test.go compares the
names with kustomize's). Called with (dict "name" NAME "corefile" TEXT).
*/}}
{{- define "clusterdns.corefileConfigMap" -}}
{{- $hash := dict "data" (dict "Corefile" .corefile) "kind" "ConfigMap" "name" "" | toJson | sha256sum | trunc 10 -}}
{{- printf "%s-%s" .name ($hash | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t") -}}
{{- end }}

{{/* The central role's Corefile: the value, or the repository's Corefile.cluster. */}}
{{- define "clusterdns.clusterCorefile" -}}
{{- .Values.corefile | default (.Files.Get "files/Corefile.cluster") -}}
{{- end }}

{{/* The node role's Corefile: the value, or the repository's Corefile.nodelocal. */}}
{{- define "clusterdns.nodeCorefile" -}}
{{- .Values.node.corefile | default (.Files.Get "files/Corefile.nodelocal") -}}
{{- end }}

{{/* Where the ServiceMonitors go. */}}
{{- define "clusterdns.monitorNamespace" -}}
{{- .Values.prometheus.monitor.namespace | default .Release.Namespace -}}
{{- end }}

{{/* One ServiceMonitor endpoint on the Service port `metrics`, with the monitor values. */}}
{{- define "clusterdns.monitorEndpoint" -}}
- port: metrics
  {{- with .interval }}
  interval: {{ . }}
  {{- end }}
  {{- with .scrapeTimeout }}
  scrapeTimeout: {{ . }}
  {{- end }}
  {{- with .scheme }}
  scheme: {{ . }}
  {{- end }}
  {{- if .honorLabels }}
  honorLabels: true
  {{- end }}
  {{- with .tlsConfig }}
  tlsConfig:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .relabelings }}
  relabelings:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .metricRelabelings }}
  metricRelabelings:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
