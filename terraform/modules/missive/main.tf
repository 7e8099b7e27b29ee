# Missive in one namespace: settings, secrets, the migration Job, every function, the
# dead-letter sink and the public routing.
#
# The function list and each function's own settings are read from
# knative/base/functions/*.yaml, the same files kustomize deploys, so Terraform and
# kustomize cannot disagree about which functions exist; scripts/check_deploy.py holds
# those files to the workspace's crates.

locals {
  knative_dir = "${path.module}/../../../knative/base"
  functions = {
    for file in fileset("${local.knative_dir}/functions", "*.yaml") :
    trimsuffix(file, ".yaml") => yamldecode(file("${local.knative_dir}/functions/${file}"))
  }

  # Event functions and what feeds them.
  kafka_sources = {
    # Named as in knative/base/eventing/kafka-sources.yaml: the name is part of the
    # source's sender identity (its service account).
    "message-ingest"  = { name = "message-ingest-inbox", topic = local.config.KAFKA_INBOX_TOPIC, consumer_group = "missive-message-ingest" }
    "activity-record" = { name = "activity-record-events", topic = local.config.KAFKA_EVENTS_TOPIC, consumer_group = "missive-activity-record" }
  }
  # Each function's database pool, as in knative/base/kustomization.yaml (compared by
  # scripts/check_deploy.py). web has no database.
  db_pools = {
    "message-create"  = 4
    "message-delete"  = 4
    "message-get"     = 4
    "message-list"    = 4
    "message-search"  = 4
    "message-ingest"  = 4
    "auth-login"      = 2
    "auth-signup"     = 2
    "auth-logout"     = 2
    "activity-list"   = 1
    "activity-record" = 1
    "activity-stream" = 1
    "auth-me"         = 1
    "outbox-relay"    = 1
  }
  # Every function at max-scale with its pool full, plus the migration Job.
  worst_case_connections = sum([for name, pool in local.db_pools : pool * var.max_scale]) + 1

  ping_sources = {
    "outbox-relay" = { schedule = "* * * * *", data = "{\"reason\":\"outbox relay tick\"}" }
  }

  # argon2id hashes at 19 MiB each, one per CPU at a time (knative/base/password-hashing.yaml).
  resources = {
    "password-hashing" = {
      requests = { cpu = "250m", memory = "80Mi" }
      limits   = { cpu = "2", memory = "160Mi" }
    }
  }

  config = merge({
    LOG_LEVEL                   = "info"
    COOKIE_SECURE               = "true"
    PUBLIC_ORIGINS              = "https://${var.host}"
    TRUSTED_PROXIES             = join(",", var.trusted_proxies)
    DB_IDLE_TIMEOUT_SECS        = "60"
    REQUEST_TIMEOUT_SECS        = "30"
    BACKEND_TIMEOUT_MS          = "1000"
    SHUTDOWN_GRACE_SECS         = "25"
    KAFKA_BROKERS               = join(",", var.kafka_brokers)
    KAFKA_EVENTS_TOPIC          = "missive.events"
    KAFKA_INBOX_TOPIC           = "missive.inbox"
    KAFKA_DLQ_TOPIC             = "missive.dlq"
    OUTBOX_RELAY_MIN_AGE_SECS   = "5"
    OIDC_ISSUER                 = var.oidc_issuer
    OTEL_EXPORTER_OTLP_ENDPOINT = "http://otel-collector.observability.svc.cluster.local:4318"
    OTEL_TRACES_SAMPLER         = "parentbased_traceidratio"
    OTEL_TRACES_SAMPLER_ARG     = "1.0"
  }, var.config)

  # The HTTPRoute of knative/base/routing.yaml, pointed at this namespace, host and
  # gateways.
  route_template = yamldecode(file("${local.knative_dir}/routing.yaml"))
  route = merge(local.route_template, {
    metadata = { name = local.route_template.metadata.name, namespace = var.namespace }
    spec = merge(local.route_template.spec, {
      hostnames  = [var.host]
      parentRefs = [{ group = "gateway.networking.k8s.io", kind = "Gateway", name = var.gateway.name, namespace = var.gateway.namespace }]
      rules = [for rule in local.route_template.spec.rules : merge(rule, {
        # The function is the first label of the rule's Host rewrite.
        filters = [{ type = "URLRewrite", urlRewrite = { hostname = "${split(".", rule.filters[0].urlRewrite.hostname)[0]}.${var.namespace}.svc.cluster.local" } }]
        backendRefs = [{
          group     = ""
          kind      = "Service"
          name      = var.knative_local_gateway.name
          namespace = var.knative_local_gateway.namespace
          port      = var.knative_local_gateway.port
        }]
      })]
    })
  })
}

resource "kubernetes_namespace_v1" "missive" {
  metadata {
    name = var.namespace
    labels = {
      "app.kubernetes.io/part-of"          = "missive"
      "pod-security.kubernetes.io/enforce" = "restricted"
    }
  }
}

resource "kubernetes_config_map_v1" "config" {
  metadata {
    name      = "missive-config"
    namespace = kubernetes_namespace_v1.missive.metadata[0].name
  }
  data = local.config
}

resource "kubernetes_secret_v1" "secrets" {
  metadata {
    name      = "missive-secrets"
    namespace = kubernetes_namespace_v1.missive.metadata[0].name
  }
  data = {
    DATABASE_URL = var.database_url
    REDIS_URL    = var.redis_url
  }
}

# `missive migrate` once per release, before the functions are updated (and their
# /readyz waits for the schema anyway).
resource "kubernetes_job_v1" "migrate" {
  lifecycle {
    precondition {
      condition     = local.worst_case_connections <= var.database_max_connections
      error_message = "Up to ${local.worst_case_connections} database connections (every function at max_scale, pools full) exceed database_max_connections (${var.database_max_connections}): lower max_scale, raise the server's max_connections, or put a proxy in front (docs/operations.md, Connection budget)."
    }
  }
  metadata {
    name      = "missive-migrate-${replace(var.release, ".", "-")}"
    namespace = kubernetes_namespace_v1.missive.metadata[0].name
    labels    = { "app.kubernetes.io/part-of" = "missive", "app.kubernetes.io/component" = "migrate" }
  }
  spec {
    backoff_limit              = 4
    active_deadline_seconds    = 600
    ttl_seconds_after_finished = 86400
    template {
      metadata {
        labels = { "app.kubernetes.io/component" = "migrate" }
      }
      spec {
        restart_policy                  = "Never"
        automount_service_account_token = false
        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }
        container {
          name              = "migrate"
          image             = "${var.image_registry}/missive:${var.release}"
          image_pull_policy = "Always"
          args              = ["migrate"]
          env_from {
            config_map_ref {
              name = kubernetes_config_map_v1.config.metadata[0].name
            }
          }
          env_from {
            secret_ref {
              name = kubernetes_secret_v1.secrets.metadata[0].name
            }
          }
          resources {
            requests = { cpu = "50m", memory = "32Mi" }
            limits   = { cpu = "500m", memory = "128Mi" }
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }
  wait_for_completion = true
  timeouts {
    create = "10m"
    update = "10m"
  }
}

resource "kubernetes_manifest" "dead_letters" {
  manifest = {
    apiVersion = "eventing.knative.dev/v1alpha1"
    kind       = "KafkaSink"
    metadata = {
      name      = "missive-dlq"
      namespace = kubernetes_namespace_v1.missive.metadata[0].name
      labels    = { "app.kubernetes.io/part-of" = "missive" }
    }
    spec = {
      topic             = local.config.KAFKA_DLQ_TOPIC
      bootstrapServers  = var.kafka_brokers
      contentMode       = "binary"
      numPartitions     = 3
      replicationFactor = var.dlq_replication_factor
    }
  }
}

module "function" {
  source   = "../function"
  for_each = local.functions

  name                  = each.key
  namespace             = kubernetes_namespace_v1.missive.metadata[0].name
  image                 = "${var.image_registry}/${each.key}:${var.release}"
  labels                = { "missive.dev/workload" = each.value.metadata.labels["missive.dev/workload"] }
  cluster_local         = try(each.value.metadata.labels["networking.knative.dev/visibility"], "") == "cluster-local"
  container_concurrency = each.value.spec.template.spec.containerConcurrency
  target                = tonumber(each.value.spec.template.metadata.annotations["autoscaling.knative.dev/target"])
  timeout_seconds       = try(each.value.spec.template.spec.timeoutSeconds, 300)
  min_scale             = contains(var.warm_functions, each.key) ? 1 : 0
  max_scale             = var.max_scale
  db_max_connections    = lookup(local.db_pools, each.key, null)
  resources             = try(local.resources[each.value.metadata.labels["missive.dev/workload"]], null)
  config_map            = kubernetes_config_map_v1.config.metadata[0].name
  secret                = each.value.metadata.labels["missive.dev/workload"] == "web" ? null : kubernetes_secret_v1.secrets.metadata[0].name

  kafka_source = !contains(keys(local.kafka_sources), each.key) ? null : {
    name              = local.kafka_sources[each.key].name
    topic             = local.kafka_sources[each.key].topic
    consumer_group    = local.kafka_sources[each.key].consumer_group
    bootstrap_servers = var.kafka_brokers
    dead_letter_sink  = kubernetes_manifest.dead_letters.manifest.metadata.name
  }
  ping_source = lookup(local.ping_sources, each.key, null)

  # New revisions start after the schema is migrated.
  depends_on = [kubernetes_job_v1.migrate]
}

resource "kubernetes_manifest" "route" {
  manifest   = local.route
  depends_on = [module.function]
}

resource "kubernetes_manifest" "reference_grant" {
  manifest = {
    apiVersion = "gateway.networking.k8s.io/v1beta1"
    kind       = "ReferenceGrant"
    metadata = {
      name      = "missive-to-knative-local-gateway"
      namespace = var.knative_local_gateway.namespace
    }
    spec = {
      from = [{ group = "gateway.networking.k8s.io", kind = "HTTPRoute", namespace = var.namespace }]
      to   = [{ group = "", kind = "Service", name = var.knative_local_gateway.name }]
    }
  }
}
