variable "name" {
  description = "The function's name: its crate under functions/, its Knative Service and its image."
  type        = string
}

variable "namespace" {
  description = "Namespace of the Service and its sources."
  type        = string
}

variable "image" {
  description = "Full image reference, registry/repository:tag (or @digest)."
  type        = string
}

variable "cluster_local" {
  description = "Reachable only inside the cluster (event functions): networking.knative.dev/visibility=cluster-local."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Extra labels on the Service (missive.dev/workload, ...)."
  type        = map(string)
  default     = {}
}

variable "container_concurrency" {
  description = "Hard limit of requests one instance serves at once (0 = unlimited)."
  type        = number
}

variable "target" {
  description = "Concurrency per instance the autoscaler aims for."
  type        = number
}

variable "min_scale" {
  description = "Instances kept when idle; 0 scales to zero."
  type        = number
  default     = 0
}

variable "max_scale" {
  description = "Upper bound of instances."
  type        = number
  default     = 20
}

variable "db_max_connections" {
  description = "This function's database pool (DB_MAX_CONNECTIONS); null for a function without a database."
  type        = number
  default     = null
}

variable "timeout_seconds" {
  description = "Longest request Knative lets through (Knative's default is 300)."
  type        = number
  default     = 300
}

variable "resources" {
  description = "Container requests and limits, sized from measured RSS (bench/README.md)."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  # Passing null means "the default", so callers can map only the exceptions.
  nullable = false
  default = {
    requests = { cpu = "50m", memory = "32Mi" }
    limits   = { cpu = "1", memory = "128Mi" }
  }
}

variable "config_map" {
  description = "ConfigMap every function reads its settings from."
  type        = string
}

variable "secret" {
  description = "Secret with DATABASE_URL and REDIS_URL; null for functions that use no backend (web)."
  type        = string
  default     = null
}

variable "kafka_source" {
  description = "Feed the function from a Kafka topic through a KafkaSource (event functions)."
  type = object({
    name              = optional(string) # default <function>-<topic with dashes>
    topic             = string
    consumer_group    = string
    bootstrap_servers = list(string)
    dead_letter_sink  = string
    retry             = optional(number, 8)
    backoff_delay     = optional(string, "PT0.5S")
    timeout           = optional(string, "PT30S")
  })
  default = null
}

variable "ping_source" {
  description = "Call the function on a schedule through a PingSource (cron syntax)."
  type = object({
    schedule = string
    data     = optional(string, "{}")
  })
  default = null
}
