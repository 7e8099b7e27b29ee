# The inputs of both roots (envs/dev and envs/prod link here): one list, one meaning.

variable "kubeconfig_path" {
  description = "Kubeconfig of the cluster (Knative Serving, Eventing with the Kafka extension, and a Gateway API implementation installed)."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "Context in the kubeconfig."
  type        = string
  default     = null
}

variable "release" {
  description = "Image tag to deploy (the release workflow tags by git sha and version)."
  type        = string
}

variable "image_registry" {
  description = "Registry path of the images."
  type        = string
  default     = "ghcr.io/missive-app/missive"
}

variable "host" {
  description = "Public host name."
  type        = string
}

variable "kafka_brokers" {
  description = "Kafka bootstrap servers."
  type        = list(string)
}

variable "database_url" {
  description = "MariaDB URL with credentials."
  type        = string
  sensitive   = true
}

variable "redis_url" {
  description = "Redis URL (with password if any)."
  type        = string
  sensitive   = true
}
