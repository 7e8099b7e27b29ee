terraform {
  required_version = ">= 1.6.0, < 2.0.0"
  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.38"
    }
  }

  # State belongs in a shared, locked backend, not on a laptop. For example:
  # backend "s3" {
  #   bucket       = "missive-terraform-state"
  #   key          = "dev/terraform.tfstate"
  #   region       = "eu-west-1"
  #   use_lockfile = true
  # }
}
