# One function: its Knative Service and, for event functions, the source that feeds it.
# The shared settings here (probes, security, env) are the same as knative/base's
# function-defaults.yaml; scripts/check_deploy.py compares the two.

locals {
  annotations = {
    "autoscaling.knative.dev/min-scale"                          = tostring(var.min_scale)
    "autoscaling.knative.dev/max-scale"                          = tostring(var.max_scale)
    "autoscaling.knative.dev/target"                             = tostring(var.target)
    "autoscaling.knative.dev/scale-to-zero-pod-retention-period" = "30s"
  }
  labels = merge(
    { "app.kubernetes.io/part-of" = "missive" },
    var.labels,
    var.cluster_local ? { "networking.knative.dev/visibility" = "cluster-local" } : {},
  )
  # Sender identity (common/app/src/sender_identity.rs): the audience the source asks
  # tokens for, and the source's service account as Knative Eventing names it
  # (`<source>-oidc-<group>-<kind>`, at most 63 characters or Knative shortens it).
  kafka_source_name = var.kafka_source == null ? null : coalesce(var.kafka_source.name, "${var.name}-${replace(var.kafka_source.topic, ".", "-")}")
  source_account = (
    var.kafka_source != null ? "${local.kafka_source_name}-oidc-sources.knative.dev-kafkasource" :
    var.ping_source != null ? "${var.name}-tick-oidc-sources.knative.dev-pingsource" : null
  )
  audience   = "missive/${var.name}"
  shared_env = [{ name = "RUST_BACKTRACE", value = "0" }]
  env = concat(
    local.shared_env,
    var.db_max_connections == null ? [] : [{ name = "DB_MAX_CONNECTIONS", value = tostring(var.db_max_connections) }],
    local.source_account == null ? [] : [
      { name = "OIDC_AUDIENCE", value = local.audience },
      { name = "OIDC_ALLOWED_SUBJECTS", value = "system:serviceaccount:${var.namespace}:${local.source_account}" },
    ],
  )
  env_from = concat(
    [{ configMapRef = { name = var.config_map } }],
    var.secret == null ? [] : [{ secretRef = { name = var.secret } }],
  )
}

resource "kubernetes_manifest" "service" {
  manifest = {
    apiVersion = "serving.knative.dev/v1"
    kind       = "Service"
    metadata = {
      name      = var.name
      namespace = var.namespace
      labels    = local.labels
    }
    spec = {
      template = {
        metadata = { annotations = local.annotations }
        spec = {
          containerConcurrency = var.container_concurrency
          timeoutSeconds       = var.timeout_seconds
          containers = [{
            name    = "function"
            image   = var.image
            ports   = [{ name = "http1", containerPort = 8080 }]
            envFrom = local.env_from
            env     = local.env
            readinessProbe = {
              httpGet          = { path = "/readyz" }
              failureThreshold = 3
            }
            livenessProbe = {
              httpGet          = { path = "/healthz" }
              periodSeconds    = 10
              timeoutSeconds   = 2
              failureThreshold = 3
            }
            resources = var.resources
            securityContext = {
              runAsNonRoot             = true
              runAsUser                = 65532
              runAsGroup               = 65532
              allowPrivilegeEscalation = false
              readOnlyRootFilesystem   = true
              capabilities             = { drop = ["ALL"] }
              seccompProfile           = { type = "RuntimeDefault" }
            }
          }]
        }
      }
    }
  }

  # Knative fills in defaults (traffic, template names); Terraform should not fight it.
  computed_fields = ["metadata.annotations", "metadata.labels", "spec.traffic", "spec.template.metadata.labels"]

  wait {
    condition {
      type   = "Ready"
      status = "True"
    }
  }
  timeouts {
    create = "10m"
    update = "10m"
  }
}

resource "kubernetes_manifest" "kafka_source" {
  count = var.kafka_source == null ? 0 : 1
  lifecycle {
    precondition {
      condition     = length(local.source_account) <= 63
      error_message = "The KafkaSource name is too long: Knative would shorten its service account name and the function would refuse its tokens."
    }
  }
  manifest = {
    apiVersion = "sources.knative.dev/v1beta1"
    kind       = "KafkaSource"
    metadata = {
      name      = local.kafka_source_name
      namespace = var.namespace
      labels    = { "app.kubernetes.io/part-of" = "missive" }
    }
    spec = {
      # Fixed, so a redeploy resumes from the committed offsets.
      consumerGroup    = var.kafka_source.consumer_group
      bootstrapServers = var.kafka_source.bootstrap_servers
      topics           = [var.kafka_source.topic]
      initialOffset    = "earliest"
      ordering         = "ordered"
      delivery = {
        retry         = var.kafka_source.retry
        backoffPolicy = "exponential"
        backoffDelay  = var.kafka_source.backoff_delay
        timeout       = var.kafka_source.timeout
        deadLetterSink = {
          ref = {
            apiVersion = "eventing.knative.dev/v1alpha1"
            kind       = "KafkaSink"
            name       = var.kafka_source.dead_letter_sink
          }
        }
      }
      sink = {
        ref = {
          apiVersion = "serving.knative.dev/v1"
          kind       = "Service"
          name       = var.name
        }
        audience = local.audience
      }
    }
  }
  depends_on = [kubernetes_manifest.service]
}

resource "kubernetes_manifest" "ping_source" {
  count = var.ping_source == null ? 0 : 1
  manifest = {
    apiVersion = "sources.knative.dev/v1"
    kind       = "PingSource"
    metadata = {
      name      = "${var.name}-tick"
      namespace = var.namespace
      labels    = { "app.kubernetes.io/part-of" = "missive" }
    }
    spec = {
      schedule    = var.ping_source.schedule
      contentType = "application/json"
      data        = var.ping_source.data
      sink = {
        ref = {
          apiVersion = "serving.knative.dev/v1"
          kind       = "Service"
          name       = var.name
        }
        audience = local.audience
      }
    }
  }
  depends_on = [kubernetes_manifest.service]
}
