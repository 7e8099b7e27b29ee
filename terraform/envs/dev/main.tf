# The development cluster: images from main, debug logs, every trace kept, small scale.
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

  dlq_replication_factor = 1
  max_scale              = 3
  config = {
    LOG_LEVEL                = "debug"
    OTEL_RESOURCE_ATTRIBUTES = "deployment.environment.name=dev"
  }
}

output "functions" {
  description = "Deployed functions and their URLs."
  value       = module.missive.functions
}
