output "name" {
  description = "The Knative Service's name."
  value       = var.name
}

output "url" {
  description = "The URL Knative assigned (cluster-local for event functions)."
  value       = try(kubernetes_manifest.service.object.status.url, null)
}
