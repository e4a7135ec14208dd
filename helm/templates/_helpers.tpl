{{/*
Names. The release `sms-app` gives `sms-app-app`, `sms-app-model`, ... (docs/contracts.md).
*/}}
{{- define "sms-app.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix: the release name, unless it already contains the chart name
or fullnameOverride is set. Kept at most 40 characters so that the longest suffix
(`-model-headless`, `-dashboard-...`) still fits in 63.
*/}}
{{- define "sms-app.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sms-app.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sms-app.appName" -}}{{ include "sms-app.fullname" . }}-app{{- end }}
{{- define "sms-app.modelName" -}}{{ include "sms-app.fullname" . }}-model{{- end }}

{{/* Common labels of every object. */}}
{{- define "sms-app.labels" -}}
helm.sh/chart: {{ include "sms-app.chart" . }}
{{ include "sms-app.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "sms-app.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels shared by every workload of the release. */}}
{{- define "sms-app.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sms-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "app"). */}}
{{- define "sms-app.componentSelector" -}}
{{ include "sms-app.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image reference: include with (dict "ctx" $ "image" .Values.appService.image "tag" override). */}}
{{- define "sms-app.image" -}}
{{- $registry := .ctx.Values.image.registry -}}
{{- $repo := .image.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- if .image.digest -}}
{{ $repo }}@{{ .image.digest }}
{{- else -}}
{{ $repo }}:{{ default (default .ctx.Chart.AppVersion .image.tag) .tag }}
{{- end -}}
{{- end }}

{{/* The chart's own canary runs with Istio on, the canary on and Flagger off (with
Flagger, Flagger makes and routes the canary). It keeps running at weight 0: a rollback by
weight only takes its routes away, so neither that step nor ramping up again races the
pods (no route to a pod that is going, or not ready yet). */}}
{{- define "sms-app.canaryDeployed" -}}
{{- if and .Values.istio.enabled .Values.istio.canary.enabled (not .Values.flagger.enabled) -}}
true
{{- end -}}
{{- end }}

{{/* The canary gets traffic: it runs and its weight is > 0. */}}
{{- define "sms-app.canaryActive" -}}
{{- if and (include "sms-app.canaryDeployed" .) (gt (int .Values.istio.canary.weights.canary) 0) -}}
true
{{- end -}}
{{- end }}

{{/*
Flagger runs the app's canary (flagger.enabled, needs Istio): it copies Deployment
<app> to <app>-primary, runs <app> itself as the canary, and owns the app's
VirtualService and DestinationRules; the chart then renders none of those.
*/}}
{{- define "sms-app.flaggerActive" -}}
{{- if and .Values.flagger.enabled .Values.istio.enabled -}}
true
{{- end -}}
{{- end }}

{{/*
Selector of the app pods that serve users outside an experiment (NGINX's Service, the
PDB): the stable version, or with Flagger the primary's pods, whose `app` label Flagger
rewrites to <app>-primary.
*/}}
{{- define "sms-app.appStableSelector" -}}
{{ include "sms-app.componentSelector" (dict "ctx" . "component" "app") }}
{{- if include "sms-app.flaggerActive" . }}
app: {{ include "sms-app.appName" . }}-primary
{{- else }}
version: {{ .Values.appService.version }}
{{- end }}
{{- end }}

{{/* The shadow runs only with Istio (the app's sidecar does the mirroring). */}}
{{- define "sms-app.shadowActive" -}}
{{- if and .Values.istio.enabled .Values.modelService.shadow.enabled -}}
true
{{- end -}}
{{- end }}

{{/* Sticky cookie lifetime in seconds, from an integer or a duration such as 3600s, 60m, 1h. */}}
{{- define "sms-app.cookieTTLSeconds" -}}
{{- $ttl := toString .Values.istio.canary.stickyCookie.ttl -}}
{{- if regexMatch "^[0-9]+$" $ttl -}}
{{ $ttl }}
{{- else if regexMatch "^[0-9]+s$" $ttl -}}
{{ trimSuffix "s" $ttl }}
{{- else if regexMatch "^[0-9]+m$" $ttl -}}
{{ mul (trimSuffix "m" $ttl | atoi) 60 }}
{{- else if regexMatch "^[0-9]+h$" $ttl -}}
{{ mul (trimSuffix "h" $ttl | atoi) 3600 }}
{{- else -}}
{{ fail (printf "istio.canary.stickyCookie.ttl must be seconds or a duration like 3600s, 60m, 1h (got %q)" $ttl) }}
{{- end -}}
{{- end }}

{{/* Fully qualified name of a Service in the release namespace. */}}
{{- define "sms-app.svcFQDN" -}}
{{ .name }}.{{ .ctx.Release.Namespace }}.svc.cluster.local
{{- end }}

{{/*
MODEL_HOST: in the mesh the ClusterIP Service (the sidecar balances per request and
applies the mirror); without Istio the headless Service (the app balances over all
pod addresses, as gRPC keeps one HTTP/2 connection).
*/}}
{{- define "sms-app.modelHost" -}}
{{- if .Values.istio.enabled -}}
http://{{ include "sms-app.modelName" . }}:{{ .Values.modelService.grpcPort }}
{{- else -}}
http://{{ include "sms-app.modelName" . }}-headless:{{ .Values.modelService.grpcPort }}
{{- end -}}
{{- end }}

{{/* Checks that JSON schema cannot express; they fail the render with a message naming the values. */}}
{{- define "sms-app.validate" -}}
{{- $w := .Values.istio.canary.weights -}}
{{- if ne (add (int $w.stable) (int $w.canary)) 100 -}}
{{- fail (printf "istio.canary.weights.stable (%v) + istio.canary.weights.canary (%v) must add up to 100 (they add up to %v)" $w.stable $w.canary (add (int $w.stable) (int $w.canary))) -}}
{{- end -}}
{{- if eq .Values.appService.version .Values.appService.canary.version -}}
{{- fail (printf "appService.version and appService.canary.version must differ (both are %q): they name the Istio subsets" .Values.appService.version) -}}
{{- end -}}
{{- if eq .Values.modelService.version .Values.modelService.shadow.version -}}
{{- fail (printf "modelService.version and modelService.shadow.version must differ (both are %q): they name the Istio subsets" .Values.modelService.version) -}}
{{- end -}}
{{- if and .Values.istio.podAffinityCookie (eq .Values.istio.podAffinityCookie .Values.istio.canary.stickyCookie.name) -}}
{{- fail (printf "istio.podAffinityCookie (%q) must differ from istio.canary.stickyCookie.name: Envoy would overwrite the version cookie" .Values.istio.podAffinityCookie) -}}
{{- end -}}
{{- if and .Values.alerting.enabled (not .Values.alerting.smtp.existingSecret) (not .Values.alerting.smtp.password) -}}
{{- fail "alerting.enabled needs alerting.smtp.existingSecret (preferred) or alerting.smtp.password (--set-string at install time)" -}}
{{- end -}}
{{- if and .Values.flagger.enabled (not .Values.istio.enabled) -}}
{{- fail "flagger.enabled needs istio.enabled: Flagger routes the canary with an Istio VirtualService" -}}
{{- end -}}
{{- $fullname := include "sms-app.fullname" . -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $fullname) -}}
{{- fail (printf "the name prefix %q (release name or fullnameOverride) must be lower-case letters, digits and '-', starting with a letter: it names Services and the alert rules' job and pod selectors" $fullname) -}}
{{- end -}}
{{- $_ := include "sms-app.cookieTTLSeconds" . -}}
{{- end }}

{{/* Pod security context and container security context. */}}
{{- define "sms-app.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Gateway/VirtualService hosts: every istio.hosts entry plus its stable./canary. forms. */}}
{{- define "sms-app.istioHosts" -}}
{{- range .Values.istio.hosts }}
- {{ . | quote }}
- {{ printf "stable.%s" . | quote }}
- {{ printf "canary.%s" . | quote }}
{{- end }}
{{- end }}

{{/* Regex matching an :authority of one of the given prefixed hosts, with an optional port. */}}
{{- define "sms-app.authorityRegex" -}}
{{- $prefix := .prefix -}}
{{- $alts := list -}}
{{- range .hosts }}{{ $alts = append $alts (regexQuoteMeta (printf "%s.%s" $prefix .)) }}{{ end -}}
^({{ join "|" $alts }})(:[0-9]+)?$
{{- end }}

{{/* Regex matching a Cookie header that holds NAME=VALUE as one of its pairs. */}}
{{- define "sms-app.cookieRegex" -}}
^(.*;\s*)?{{ regexQuoteMeta .name }}={{ regexQuoteMeta .value }}(;.*)?$
{{- end }}

{{/*
The Istio proxies' idle timeout towards the app: 5 s under the app's own
(appService.idleTimeoutSeconds), so the proxy closes an idle connection before the app does.
*/}}
{{- define "sms-app.proxyIdleTimeout" -}}
{{ sub (int .Values.appService.idleTimeoutSeconds) 5 }}s
{{- end }}
