# chutes-gateway: the stateless data plane as a Nomad service job, one or more per datacenter.
#
#   nomad var put nomad/jobs/chutes-gateway gateway_key=cnk_... consul_token=... nomad_token=...
#   nomad job run -var image=ghcr.io/example/chutes-nomad:0.1.0 jobs_hcl/chutes-gateway.nomad.hcl
#
# Each gateway watches Consul for passing instances of each chute, keeps those that are running
# allocations of the chute's Nomad job (its Nomad token needs read-job only), authenticates calls against
# the scheduler and forwards them signed. Put a load balancer (or DNS) in front of the static port.

variable "image" {
  type        = string
  description = "an image with the chutes-nomad package installed (chutes-gateway on PATH)"
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
  type    = number
  default = 8080
}

variable "scheduler_url" {
  type    = string
  default = "http://chutes-scheduler.service.consul:8700"
}

variable "domain" {
  type        = string
  default     = ""
  description = "wildcard domain for <username>-<chute>.<domain> addresses; empty for path addresses only"
}

job "chutes-gateway" {
  type        = "service"
  datacenters = var.datacenters
  priority    = 80

  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "3m"
    auto_revert      = true
  }

  group "gateway" {
    count = var.count

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
      name     = "chutes-gateway"
      provider = "consul"
      port     = "http"
      tags     = ["chutes", "data-plane"]

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "5s"
      mode     = "delay"
    }

    # Leave Consul first, then drain: the load balancer stops sending new calls before the kill.
    shutdown_delay = "5s"

    task "gateway" {
      driver = "docker"

      config {
        image   = var.image
        command = "chutes-gateway"
        ports   = ["http"]
      }

      env {
        CHUTES_GATEWAY_HOST    = "0.0.0.0"
        CHUTES_GATEWAY_PORT    = "${NOMAD_PORT_http}"
        CHUTES_SCHEDULER_URL   = var.scheduler_url
        CHUTES_GATEWAY_DOMAIN  = var.domain
        CONSUL_HTTP_ADDR       = "http://${attr.unique.network.ip-address}:8500"
        NOMAD_ADDR             = "http://${attr.unique.network.ip-address}:4646"
        # Usage records wait here until the scheduler has them; the allocation's directory outlives a crash
        # of the task (Nomad restarts it in place), so the restarted gateway sends what the dead one could not.
        CHUTES_GATEWAY_SPOOL_DIR = "${NOMAD_ALLOC_DIR}/data/usage-spool"
      }

      template {
        destination = "${NOMAD_SECRETS_DIR}/gateway.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/chutes-gateway" }}
          CHUTES_GATEWAY_KEY={{ .gateway_key }}
          CONSUL_HTTP_TOKEN={{ .consul_token }}
          NOMAD_TOKEN={{ .nomad_token }}
          {{ end }}
        EOT
      }

      # Streams may run long; the gateway stops accepting and lets them finish.
      kill_timeout = "60s"

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}
