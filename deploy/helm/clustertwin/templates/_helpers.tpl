{{/* Names and labels every resource shares. */}}
{{- define "clustertwin.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "clustertwin.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "clustertwin.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The KafkaUser (and so the Secret Strimzi writes its password into) of a role. */}}
{{- define "clustertwin.kafkaUser" -}}
{{- printf "%s-%s" (include "clustertwin.fullname" .root) .role | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The settings every process reads (clustertwin_base/settings.py): Kafka with the role's
SCRAM user, whose password file Strimzi's Secret provides, and InfluxDB's token.
*/}}
{{- define "clustertwin.env" -}}
- name: CLUSTERTWIN_KAFKA_BOOTSTRAP
  value: {{ .root.Values.kafka.bootstrap | quote }}
- name: CLUSTERTWIN_KAFKA_SECURITY_PROTOCOL
  value: {{ .root.Values.kafka.securityProtocol | quote }}
- name: CLUSTERTWIN_KAFKA_SASL_MECHANISM
  value: {{ .root.Values.kafka.saslMechanism | quote }}
- name: CLUSTERTWIN_KAFKA_SASL_USERNAME
  value: {{ include "clustertwin.kafkaUser" . | quote }}
- name: CLUSTERTWIN_KAFKA_SASL_PASSWORD_FILE
  value: /etc/clustertwin/kafka-user/password
{{- if eq .root.Values.kafka.securityProtocol "SASL_SSL" }}
- name: CLUSTERTWIN_KAFKA_SSL_CAFILE
  value: /etc/clustertwin/kafka-ca/ca.crt
{{- end }}
- name: CLUSTERTWIN_KAFKA_REPLICATION_FACTOR
  value: {{ .root.Values.kafka.replicationFactor | quote }}
- name: CLUSTERTWIN_READINGS_TOPIC
  value: {{ .root.Values.kafka.topics.readings | quote }}
- name: CLUSTERTWIN_DEADLETTER_TOPIC
  value: {{ .root.Values.kafka.topics.deadletter | quote }}
- name: CLUSTERTWIN_CACHE
  value: /var/lib/clustertwin
{{- end -}}

{{- define "clustertwin.influxEnv" -}}
- name: CLUSTERTWIN_INFLUX_URL
  value: {{ .Values.influxdb.url | quote }}
- name: CLUSTERTWIN_INFLUX_ORG
  value: {{ .Values.influxdb.org | quote }}
- name: CLUSTERTWIN_INFLUX_BUCKET
  value: {{ .Values.influxdb.bucket | quote }}
- name: CLUSTERTWIN_INFLUX_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ required "influxdb.tokenSecret.name: the Secret holding the InfluxDB token" .Values.influxdb.tokenSecret.name | quote }}
      key: {{ .Values.influxdb.tokenSecret.key | quote }}
{{- end -}}

{{- define "clustertwin.kafkaVolumeMounts" -}}
- name: kafka-user
  mountPath: /etc/clustertwin/kafka-user
  readOnly: true
{{- if eq .root.Values.kafka.securityProtocol "SASL_SSL" }}
- name: kafka-ca
  mountPath: /etc/clustertwin/kafka-ca
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "clustertwin.kafkaVolumes" -}}
- name: kafka-user
  secret:
    secretName: {{ include "clustertwin.kafkaUser" . }}
    items:
      - key: password
        path: password
- name: tmp
  emptyDir: {}
{{- if eq .root.Values.kafka.securityProtocol "SASL_SSL" }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end -}}

{{/* Probes on a worker's own health views (streams/runtime/health.py). */}}
{{- define "clustertwin.probes" -}}
startupProbe:
  httpGet: {path: /health/live, port: http}
  periodSeconds: 5
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /health/live, port: http}
  periodSeconds: 15
  timeoutSeconds: 5
  failureThreshold: 4
readinessProbe:
  httpGet: {path: /health/ready, port: http}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
{{- end -}}

{{- define "clustertwin.pvc" -}}
- metadata:
    name: data
  spec:
    accessModes: [ReadWriteOnce]
    {{- with .storageClassName }}
    storageClassName: {{ . | quote }}
    {{- end }}
    resources:
      requests:
        storage: {{ .storage | quote }}
{{- end -}}
