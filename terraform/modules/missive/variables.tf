variable "namespace" {
  description = "Namespace of every Missive object (the HTTPRoute's rewrites use it)."
  type        = string
  default     = "missive"
}

variable "release" {
  description = "Version to deploy: the image tag of every function (a git sha or a version)."
  type        = string
}

variable "image_registry" {
  description = "Where the release workflow pushes the images: <registry>/<function>:<release>."
  type        = string
  default     = "ghcr.io/missive-app/missive"
}

variable "host" {
  description = "The public host name (the Gateway's listener must accept it)."
  type        = string
}

variable "gateway" {
  description = "The Gateway the HTTPRoute attaches to."
  type = object({
    name      = string
    namespace = string
  })
}

variable "knative_local_gateway" {
  description = "Knative's cluster-local gateway Service, where the HTTPRoute sends requests (with net-gateway-api on Istio: knative-local-gateway in istio-system)."
  type = object({
    name      = string
    namespace = string
    port      = number
  })
  default = {
    name      = "knative-local-gateway"
    namespace = "istio-system"
    port      = 80
  }
}

variable "config" {
  description = "Settings for missive-config, over the defaults in main.tf (README's configuration table)."
  type        = map(string)
  default     = {}
}

variable "kafka_brokers" {
  description = "Kafka bootstrap servers, host:port."
  type        = list(string)
}

variable "dlq_replication_factor" {
  description = "Replication factor of the dead-letter topic."
  type        = number
  default     = 3
}

variable "database_url" {
  description = "mysql://user:password@host:3306/missive (goes into the Secret missive-secrets)."
  type        = string
  sensitive   = true
}

variable "redis_url" {
  description = "redis://[:password@]host:6379 (goes into the Secret missive-secrets)."
  type        = string
  sensitive   = true
}

variable "warm_functions" {
  description = "Functions kept at one instance when idle (no cold start on every page load)."
  type        = set(string)
  default     = []
}

variable "max_scale" {
  description = "Upper bound of instances per function."
  type        = number
  default     = 20
}

variable "database_max_connections" {
  description = "The database server's max_connections: the plan fails when every function at max_scale with its pool full could open more (MariaDB's default is 151)."
  type        = number
  default     = 151
}

variable "oidc_issuer" {
  description = "The cluster's service-account token issuer, which signs Knative Eventing's sender tokens (`kubectl get --raw /.well-known/openid-configuration`)."
  type        = string
  default     = "https://kubernetes.default.svc.cluster.local"
}

variable "trusted_proxies" {
  description = "Networks of the proxies in front of the functions (queue-proxy, gateways, activator): the client is the rightmost X-Forwarded-For address outside them. Narrow to the cluster's pod and service CIDRs."
  type        = list(string)
  default     = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"]
}
