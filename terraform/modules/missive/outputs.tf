output "functions" {
  description = "Every function deployed, with its URL."
  value       = { for name, f in module.function : name => f.url }
}

output "migration_job" {
  description = "The Job that migrated the schema for this release."
  value       = kubernetes_job_v1.migrate.metadata[0].name
}
