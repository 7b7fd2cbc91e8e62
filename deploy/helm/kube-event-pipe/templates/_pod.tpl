{{/* The pod template shared by the Deployment and the HA StatefulSet. */}}
{{- define "kube-event-pipe.podTemplate" -}}
{{- $fullname := include "kube-event-pipe.fullname" . -}}
metadata:
  labels:
    {{- include "kube-event-pipe.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .Values.metrics.port | quote }}
    prometheus.io/path: /metrics
    # A changed configuration rolls the pod.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "kube-event-pipe.serviceAccountName" . }}
  # SIGTERM starts the drain; shutdownTimeoutSeconds must fit inside this.
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- if .Values.sinks.file.enabled }}
  # The logrotate sidecar sends SIGHUP to the pipe after a rotation.
  shareProcessNamespace: true
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $affinity := deepCopy .Values.affinity }}
  {{- if and .Values.ha.enabled (not (hasKey $affinity "podAntiAffinity")) }}
  {{- /* Replicas on one node fail together, which is the failure HA mode is for: required by
  default, so a placement that cannot be met shows as a Pending pod rather than two replicas
  silently sharing a node; preferred for single-node clusters. */}}
  {{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "kube-event-pipe.selectorLabels" . | fromYaml)) }}
  {{- if eq .Values.ha.antiAffinity "required" }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
  {{- else }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
  {{- end }}
  {{- end }}
  {{- with $affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: kube-event-pipe
      image: {{ include "kube-event-pipe.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      envFrom:
        - configMapRef:
            name: {{ $fullname }}
      {{- if or .Values.ha.enabled .Values.extraEnv }}
      env:
        {{- if .Values.ha.enabled }}
        # The Lease holder's identity: stable per replica, distinct between them.
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
      # Alive unless the source went silent with no retry to explain it (a wedge that a restart
      # cures); an API server outage or a failing sink keeps it alive.
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 3
      # Ready once the initial list is delivered, and while every sink accepts writes. In HA mode
      # a standby is ready once it has read the initial list and follows the watch, so a rolling
      # update replaces the next pod only when this one could take over.
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 1
      resources:
        {{- toYaml (ternary .Values.ha.resources .Values.resources .Values.ha.enabled) | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        capabilities:
          drop: ["ALL"]
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: filters
          mountPath: /var/lib/kube-event-pipe
        {{- if .Values.sinks.file.enabled }}
        - name: output
          mountPath: {{ dir .Values.sinks.file.path }}
        {{- end }}
    {{- if .Values.sinks.file.enabled }}
    {{- with .Values.sinks.file.logrotate }}
    - name: logrotate
      image: {{ printf "%s:%s" .image.repository .image.tag }}
      imagePullPolicy: {{ .image.pullPolicy }}
      command: ["/bin/sh", "-c"]
      args:
        - |
          while true; do
            logrotate --state /var/lib/logrotate/status /etc/logrotate/logrotate.conf
            sleep {{ .intervalSeconds }}
          done
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        capabilities:
          drop: ["ALL"]
        seccompProfile:
          type: RuntimeDefault
      # logrotate has no HTTP endpoint; it is alive while its loop's shell is.
      livenessProbe:
        exec:
          command: ["/bin/sh", "-c", "test -d /etc/logrotate"]
        periodSeconds: 60
      readinessProbe:
        exec:
          command: ["/bin/sh", "-c", "test -f /etc/logrotate/logrotate.conf"]
        periodSeconds: 60
      volumeMounts:
        - name: output
          mountPath: {{ dir $.Values.sinks.file.path }}
        - name: logrotate-config
          mountPath: /etc/logrotate
          readOnly: true
        - name: logrotate-state
          mountPath: /var/lib/logrotate
    {{- end }}
    {{- end }}
  {{- if or (not .Values.ha.enabled) .Values.sinks.file.enabled }}
  volumes:
    {{- if not .Values.ha.enabled }}
    - name: filters
      persistentVolumeClaim:
        claimName: {{ $fullname }}-filters
    {{- if .Values.sinks.file.enabled }}
    - name: output
      persistentVolumeClaim:
        claimName: {{ $fullname }}-output
    {{- end }}
    {{- end }}
    {{- if .Values.sinks.file.enabled }}
    - name: logrotate-config
      configMap:
        name: {{ $fullname }}-logrotate
    - name: logrotate-state
      emptyDir:
        sizeLimit: 1Mi
    {{- end }}
  {{- end }}
{{- end }}
