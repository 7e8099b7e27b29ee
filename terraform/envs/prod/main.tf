# Production: warm instances for what every page load calls, room to scale out, 20 % of
# traces kept (parent-based: a sampled browser trace is always kept whole).
provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}

module "missive" {
  source = "../../modules/missive"

  release        = var.release
  image_registry = var.image_registry
  host           = var.host
  gateway        = { name = "missive-public", namespace = "missive" }
  kafka_brokers  = var.kafka_brokers
  database_url   = var.database_url
  redis_url      = var.redis_url

  warm_functions = ["auth-me", "message-list", "web"]
  max_scale      = 50
  # 35 connections per replica of every function x 50, + 1 (as the prod overlay).
  database_max_connections = 2000
  config = {
    OTEL_RESOURCE_ATTRIBUTES = "deployment.environment.name=prod"
    OTEL_TRACES_SAMPLER_ARG  = "0.2"
  }
}

output "functions" {
  description = "Deployed functions and their URLs."
  value       = module.missive.functions
}
