# chutes-scheduler: the control plane (HTTP API + leader-elected loops) as a Nomad service job.
#
#   nomad var put nomad/jobs/chutes-scheduler database_url=postgresql+asyncpg://... admin_key=cnk_... \
#       secrets_key=$(chutes-scheduler secrets-key) nomad_token=... consul_token=...
#   nomad job run -var image=ghcr.io/example/chutes-nomad:0.1.0 jobs_hcl/chutes-scheduler.nomad.hcl
#
# Several instances serve the API; a Consul session lock on chutes/scheduler/leader decides which one runs
# the reconcile, autoscale and metering loops. Secrets come from the Nomad variable above (never from the
# job file), rendered into the task's environment by the template block.

variable "image" {
  type        = string
  description = "an image with the chutes-nomad package installed (chutes-scheduler on PATH)"
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "count" {
  type    = number
  default = 2
}

variable "port" {
  type        = number
  default     = 8700
  description = "static, so that instances and gateways reach chutes-scheduler.service.consul:<port>"
}

variable "public_url" {
  type        = string
  default     = "http://chutes-scheduler.service.consul:8700"
  description = "the URL instances use to download their bundle (CHUTES_PUBLIC_URL)"
}

variable "task_driver" {
  type        = string
  default     = "auto"
  description = "driver of the chute jobs: auto (docker for a chute with a built image), docker, or raw_exec (trusted hosts only)"
}

variable "chute_datacenters" {
  type    = string
  default = "dc1"
}

job "chutes-scheduler" {
  type        = "service"
  datacenters = var.datacenters
  priority    = 80

  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    auto_revert      = true
  }

  group "api" {
    count = var.count

    # One per host: losing a host must not take the control plane down.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "http" {
        static = var.port
      }
    }

    service {
      name     = "chutes-scheduler"
      provider = "consul"
      port     = "http"
      tags     = ["chutes", "control-plane"]

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    task "scheduler" {
      driver = "docker"

      config {
        image   = var.image
        command = "chutes-scheduler"
        args    = ["serve"]
        ports   = ["http"]
      }

      env {
        CHUTES_SCHEDULER_HOST = "0.0.0.0"
        CHUTES_SCHEDULER_PORT = "${NOMAD_PORT_http}"
        CHUTES_PUBLIC_URL     = var.public_url
        CHUTES_TASK_DRIVER    = var.task_driver
        CHUTES_DATACENTERS    = var.chute_datacenters
        NOMAD_ADDR            = "http://${attr.unique.network.ip-address}:4646"
        CONSUL_HTTP_ADDR      = "http://${attr.unique.network.ip-address}:8500"
        # With TLS on the cluster: https:// above, plus NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY and the
        # CONSUL_* equivalents pointing at files mounted from the host (docs/cluster.md, "TLS").
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/scheduler.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/chutes-scheduler" }}
          CHUTES_DATABASE_URL={{ .database_url }}
          CHUTES_ADMIN_KEY={{ .admin_key }}
          CHUTES_SECRETS_KEY={{ .secrets_key }}
          NOMAD_TOKEN={{ .nomad_token }}
          CONSUL_HTTP_TOKEN={{ .consul_token }}
          {{ end }}
        EOT
      }

      kill_timeout = "30s"

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }
}
