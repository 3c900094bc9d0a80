{{/*
Names, labels and the values every template derives. The proxy's pods and
the bundled Redis pod share name and instance labels and differ by
app.kubernetes.io/component, so no selector picks the other's pods.
*/}}

{{- define "crp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "crp.fullname" -}}
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

{{/* A name derived from the full name: (list . "suffix"). */}}
{{- define "crp.child" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "crp.fullname" $root | trunc (int (sub 62 (len (index . 1)))) | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "crp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "crp.labels" -}}
helm.sh/chart: {{ include "crp.chart" . }}
app.kubernetes.io/name: {{ include "crp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: container-registry-proxy
{{- end }}

{{/* Selector labels of the proxy's pods. */}}
{{- define "crp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end }}

{{/* Selector labels of the bundled Redis pod. */}}
{{- define "crp.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "crp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "crp.scaled" -}}
{{- if eq .Values.mode "scaled" }}true{{ end }}
{{- end }}

{{- define "crp.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "crp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "crp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Where the proxy's files are. */}}
{{- define "crp.configDir" -}}/etc/container-registry-proxy{{- end }}
{{- define "crp.cacheDir" -}}/registry_proxy_mirror_cache{{- end }}
{{- define "crp.caDir" -}}/ca{{- end }}
{{- define "crp.containerPort" -}}3128{{- end }}

{{/* ---- Secrets: the name each reference uses, and whether the chart makes it. */}}

{{/* The CA comes from a Secret: always in scaled mode, in single mode when one is given. */}}
{{- define "crp.caFromSecret" -}}
{{- if or (include "crp.scaled" .) .Values.ca.existingSecret .Values.ca.certificate }}true{{ end }}
{{- end }}

{{- define "crp.caSecretName" -}}
{{- .Values.ca.existingSecret | default (include "crp.child" (list . "ca")) }}
{{- end }}

{{- define "crp.authSecretName" -}}
{{- .Values.auth.existingSecret | default (include "crp.child" (list . "auth")) }}
{{- end }}

{{- define "crp.authSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}AUTH_REGISTRIES{{ end }}
{{- end }}

{{- define "crp.s3SecretName" -}}
{{- .Values.storage.s3.credentials.existingSecret | default (include "crp.child" (list . "s3")) }}
{{- end }}

{{- define "crp.s3HasCredentials" -}}
{{- $c := .Values.storage.s3.credentials }}
{{- if or $c.existingSecret $c.accessKeyId }}true{{ end }}
{{- end }}

{{- define "crp.clusterSecretName" -}}
{{- .Values.cluster.existingSecret | default (include "crp.child" (list . "cluster")) }}
{{- end }}

{{- define "crp.clusterSecretKey" -}}
{{- if .Values.cluster.existingSecret }}{{ .Values.cluster.existingSecretKey }}{{ else }}cluster-secret{{ end }}
{{- end }}

{{/* The Redis password's Secret and key; empty name: no password. */}}
{{- define "crp.redisSecretName" -}}
{{- if .Values.redis.bundled.enabled }}
{{- .Values.redis.bundled.existingSecret | default (include "crp.child" (list . "redis")) }}
{{- else if .Values.redis.external.existingSecret }}
{{- .Values.redis.external.existingSecret }}
{{- else if .Values.redis.external.password }}
{{- include "crp.child" (list . "redis") }}
{{- end }}
{{- end }}

{{- define "crp.redisSecretKey" -}}
{{- if and (not .Values.redis.bundled.enabled) .Values.redis.external.existingSecret }}{{ .Values.redis.external.existingSecretKey }}{{ else }}password{{ end }}
{{- end }}

{{- define "crp.redisAddr" -}}
{{- if .Values.redis.bundled.enabled }}
{{- printf "%s:6379" (include "crp.child" (list . "redis")) }}
{{- else }}
{{- .Values.redis.external.address }}
{{- end }}
{{- end }}

{{/*
A generated secret value that survives upgrades: the value already in the
cluster (lookup; nothing under helm template or --dry-run=client), else a
new one. (dict "ctx" . "name" secretName "key" key "length" n) → base64.
*/}}
{{- define "crp.keptRandom" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/* ---- The configuration file (CONFIG_FILE). */}}
{{- define "crp.configFile" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- if include "crp.scaled" . }}
{{- range $k := list "storage" "redis" "cluster" }}
{{- if hasKey $cfg $k }}
{{- fail (printf "config.%s: in scaled mode %s comes from the chart's values (storage.s3, redis, cluster), not from config" $k $k) }}
{{- end }}
{{- end }}
{{- $v := .Values.storage.s3 }}
{{- $s3 := dict "bucket" $v.bucket "region" $v.region "forcepathstyle" $v.forcepathstyle "secure" $v.secure "skipverify" $v.skipverify "encrypt" $v.encrypt }}
{{- range $k := list "regionendpoint" "rootdirectory" "keyid" "storageclass" }}
{{- if index $v $k }}{{ $_ := set $s3 $k (index $v $k) }}{{ end }}
{{- end }}
{{- range $k, $p := $v.parameters }}
{{- if hasKey $s3 $k }}
{{- fail (printf "storage.s3.parameters.%s: set it as storage.s3.%s" $k $k) }}
{{- end }}
{{- if or (eq $k "accesskey") (eq $k "secretkey") }}
{{- fail (printf "storage.s3.parameters.%s: credentials go in a Secret (storage.s3.credentials), not in the ConfigMap" $k) }}
{{- end }}
{{- $_ := set $s3 $k $p }}
{{- end }}
{{- $_ := set $cfg "storage" (dict "s3" $s3 "redirect" .Values.storage.redirect) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Checks values.schema.json cannot express: one source per secret, and no
secret or chart-managed variable in the `env` ConfigMap.
*/}}
{{- define "crp.validate" -}}
{{- $managed := list "REGISTRIES" "DOCKER_HUB" "ENABLE_MANIFEST_CACHE" "CACHE_MAX_SIZE" "CACHE_MIN_FREE" "CACHE_INACTIVE_TIME" "ALLOW_PUSH" "LOG_FORMAT" "DEBUG" "DEFAULT_ACCESS_MODE" "METRICS_LISTEN" "AUTH_REGISTRIES_DELIMITER" "AUTH_REGISTRY_DELIMITER" "CONFIG_FILE" "CACHE_DIRECTORY" "CA_DIRECTORY" "LISTEN" "HTPASSWD" "POD_IP" "CLUSTER_ADVERTISE" "REDIS_ADDR" "REDIS_DB" "REDIS_PREFIX" "STORAGE_REDIRECT" }}
{{- $secret := list "AUTH_REGISTRIES" "CLUSTER_SECRET" "REDIS_PASSWORD" "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" }}
{{- range $k, $_ := .Values.env }}
{{- if has $k $managed }}
{{- fail (printf "env.%s: the chart sets %s from its own values (values.yaml)" $k $k) }}
{{- end }}
{{- if has $k $secret }}
{{- fail (printf "env.%s: a secret does not belong in a ConfigMap; use the chart's Secret values or extraEnv with valueFrom" $k) }}
{{- end }}
{{- end }}
{{- if and .Values.auth.existingSecret .Values.auth.authRegistries }}
{{- fail "auth: set existingSecret or authRegistries, not both" }}
{{- end }}
{{- if and .Values.ca.existingSecret (or .Values.ca.certificate .Values.ca.privateKey) }}
{{- fail "ca: set existingSecret or certificate and privateKey, not both" }}
{{- end }}
{{- if ne (empty .Values.ca.certificate) (empty .Values.ca.privateKey) }}
{{- fail "ca: certificate and privateKey go together" }}
{{- end }}
{{- if include "crp.scaled" . }}
{{- $c := .Values.storage.s3.credentials }}
{{- if and $c.existingSecret (or $c.accessKeyId $c.secretAccessKey) }}
{{- fail "storage.s3.credentials: set existingSecret or accessKeyId and secretAccessKey, not both" }}
{{- end }}
{{- if ne (empty $c.accessKeyId) (empty $c.secretAccessKey) }}
{{- fail "storage.s3.credentials: accessKeyId and secretAccessKey go together" }}
{{- end }}
{{- if and .Values.cluster.existingSecret .Values.cluster.secret }}
{{- fail "cluster: set existingSecret or secret, not both" }}
{{- end }}
{{- if and (not .Values.redis.bundled.enabled) .Values.redis.external.existingSecret .Values.redis.external.password }}
{{- fail "redis.external: set existingSecret or password, not both" }}
{{- end }}
{{- end }}
{{- end }}
