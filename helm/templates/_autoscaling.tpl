{{/*
Autoscaling (autoscaling.*): which Deployments are scaled, by what, and the checks that
keep the numbers consistent. hpa.yaml and keda-scaledobjects.yaml render one object per
entry of sms-app.autoscaledDeployments; the Deployments leave out `replicas` while
sms-app.autoscalingOn, so a `helm upgrade` never resets the count the autoscaler chose.
*/}}
{{- define "sms-app.autoscalingOn" -}}
{{- if .Values.autoscaling.enabled -}}
true
{{- end -}}
{{- end }}

{{/* A CPU quantity ("500m", "1", 1, "1.5") in millicores. */}}
{{- define "sms-app.cpuMillis" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}
{{ trimSuffix "m" $q | int }}
{{- else -}}
{{ mulf (float64 $q) 1000 | int }}
{{- end -}}
{{- end }}

{{/*
Inference workers of one model pod: INFERENCE_WORKERS when set, else the service's
default, half the CPUs it counts rounded up (whole CPUs of the container's limit, at
least 1).
*/}}
{{- define "sms-app.modelWorkers" -}}
{{- $v := .Values.modelService -}}
{{- if gt (int $v.inferenceWorkers) 0 -}}
{{ int $v.inferenceWorkers }}
{{- else -}}
{{- $limit := dig "limits" "cpu" "" ($v.resources | default dict) -}}
{{- if not $limit -}}
{{- fail "autoscaling.keda.enabled needs modelService.inferenceWorkers or modelService.resources.limits.cpu: the model pod's overload bound (workers x queuePerWorker) is KEDA's scale-out point" -}}
{{- end -}}
{{- $cpus := max 1 (div (include "sms-app.cpuMillis" $limit | int) 1000) -}}
{{ div (add $cpus 1) 2 }}
{{- end -}}
{{- end }}

{{/*
The autoscaled Deployments as a JSON list. Each entry: `name` (the Deployment, also its
HPA's / ScaledObject's name), `values` (the autoscaling.* block and `key` its name),
`metric` and `selector`, the PromQL label matchers that pick exactly that Deployment's
pods (the series the ServiceMonitor scrapes: job = the chart's Service, the services'
own version/source labels, or with Flagger the pod name), `bound` (its pods' overload
bound, requests in flight per pod) and, for Flagger's target, `primarySelector`.
*/}}
{{- define "sms-app.autoscaledDeployments" -}}
{{- $ns := .Release.Namespace -}}
{{- $app := include "sms-app.appName" . -}}
{{- $model := include "sms-app.modelName" . -}}
{{- $a := .Values.autoscaling -}}
{{- $appBound := int .Values.appService.maxConcurrentRequests -}}
{{- $out := list -}}
{{- if include "sms-app.flaggerActive" . -}}
{{- /* Flagger's target and its primary carry the same version: told apart by pod name,
as the MetricTemplates do (<app>-<hash>-<hash> / <app>-primary-<hash>-<hash>). */ -}}
{{- $out = append $out (dict "name" $app "key" "app" "values" $a.app "metric" "sms_active_requests" "bound" $appBound
      "selector" (printf `namespace="%s", job="%s", pod=~"%s-[a-z0-9]+-[a-z0-9]+"` $ns $app $app)
      "primarySelector" (printf `namespace="%s", job="%s", pod=~"%s-primary-[a-z0-9]+-[a-z0-9]+"` $ns $app $app)) -}}
{{- else -}}
{{- $out = append $out (dict "name" $app "key" "app" "values" $a.app "metric" "sms_active_requests" "bound" $appBound
      "selector" (printf `namespace="%s", job="%s", version="%s"` $ns $app .Values.appService.version)) -}}
{{- end -}}
{{- if include "sms-app.canaryDeployed" . -}}
{{- $out = append $out (dict "name" (printf "%s-canary" $app) "key" "appCanary" "values" $a.appCanary "metric" "sms_active_requests" "bound" $appBound
      "selector" (printf `namespace="%s", job="%s", version="%s"` $ns $app .Values.appService.canary.version)) -}}
{{- end -}}
{{- $modelBound := 0 -}}
{{- if $a.keda.enabled -}}
{{- $modelBound = mul (include "sms-app.modelWorkers" . | int) (int .Values.modelService.queuePerWorker) -}}
{{- end -}}
{{- $out = append $out (dict "name" $model "key" "model" "values" $a.model "metric" "sms_model_inflight_requests" "bound" $modelBound
      "selector" (printf `namespace="%s", job="%s", version="%s", source="app"` $ns $model .Values.modelService.version)) -}}
{{- if include "sms-app.shadowActive" . -}}
{{- $out = append $out (dict "name" (printf "%s-shadow" $model) "key" "modelShadow" "values" $a.modelShadow "metric" "sms_model_inflight_requests" "bound" $modelBound
      "selector" (printf `namespace="%s", job="%s", version="%s", source="shadow"` $ns $model .Values.modelService.shadow.version)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}

{{/*
KEDA's per-pod target: autoscaling.keda.targetPercentOfOverloadBound of the bound, at
least 1 (the trigger's threshold, a string in the CRD).
*/}}
{{- define "sms-app.kedaThreshold" -}}
{{- max 1 (div (mul (int .bound) (int .percent)) 100) -}}
{{- end }}

{{/*
The replica floor of a Deployment with a PDB: its autoscaler's minReplicas, or its
fixed replicas. Include with (dict "ctx" $ "key" "app"|"model").
*/}}
{{- define "sms-app.replicaFloor" -}}
{{- $ := .ctx -}}
{{- if include "sms-app.autoscalingOn" $ -}}
{{ int (get $.Values.autoscaling .key).minReplicas }}
{{- else -}}
{{ int (ternary $.Values.appService.replicas $.Values.modelService.replicas (eq .key "app")) }}
{{- end -}}
{{- end }}

{{/* Checks JSON schema cannot express; they fail the render naming the values. */}}
{{- define "sms-app.validateAutoscaling" -}}
{{- $a := .Values.autoscaling -}}
{{- if $a.enabled -}}
{{- range $key := list "app" "appCanary" "model" "modelShadow" -}}
{{- $t := get $a $key -}}
{{- if lt (int $t.maxReplicas) (int $t.minReplicas) -}}
{{- fail (printf "autoscaling.%s.maxReplicas (%v) must be at least autoscaling.%s.minReplicas (%v)" $key $t.maxReplicas $key $t.minReplicas) -}}
{{- end -}}
{{- end -}}
{{- if not $a.keda.enabled -}}
{{- range $svc := list "appService" "modelService" -}}
{{- if not (dig "requests" "cpu" "" ((get $.Values $svc).resources | default dict)) -}}
{{- fail (printf "autoscaling.enabled scales on CPU utilisation, a share of the pods' CPU request: set %s.resources.requests.cpu (or autoscaling.keda.enabled)" $svc) -}}
{{- end -}}
{{- end -}}
{{- else if not .Values.monitoring.enabled -}}
{{- fail "autoscaling.keda.enabled needs monitoring.enabled: the triggers query the series the chart's ServiceMonitors have Prometheus scrape" -}}
{{- end -}}
{{- end -}}
{{- range $key := list "app" "model" -}}
{{- $svc := ternary "appService" "modelService" (eq $key "app") -}}
{{- $pdb := (get $.Values $svc).pdb -}}
{{- $floor := include "sms-app.replicaFloor" (dict "ctx" $ "key" $key) | int -}}
{{- if and $pdb.enabled (gt $floor 1) (ge (int $pdb.minAvailable) $floor) -}}
{{- $what := ternary (printf "autoscaling.%s.minReplicas" $key) (printf "%s.replicas" $svc) (eq (include "sms-app.autoscalingOn" $) "true") -}}
{{- fail (printf "%s.pdb.minAvailable (%v) must be below %s (%v): at that floor no pod could be evicted and node drains would hang" $svc $pdb.minAvailable $what $floor) -}}
{{- end -}}
{{- end -}}
{{- end }}
