# The Nomad job of one chute: the HCL equivalent of what the scheduler renders
# (chutes.scheduler.render.render_chute_job) and submits as JSON. The scheduler never reads this file; it
# documents the job for operators and lets you run a chute by hand:
#
#   nomad var put nomad/jobs/chute-<chute_id> CHUTES_INVOKE_SECRET=... \
#     CHUTES_INSTANCE_TOKEN_<first 12 hex digits of bundle_sha256>=... HF_TOKEN=...
#   nomad job run \
#     -var chute_id=... -var username=... -var chute_name=... -var bundle_sha256=... \
#     -var scheduler_url=http://scheduler:8700 -var 'secret_names=["HF_TOKEN"]' \
#     -var 'eligible_gpus=["a100","h100_sxm"]' -var gpu_count=2 -var min_vram_mib=38146 \
#     jobs_hcl/chute.nomad.hcl
#
# No credential is in the job: the instance token, the invoke secret and the chute's secrets are items of the
# job's Nomad Variable (values escaped for an env file: \\ \" \n \t), read by the task's template.
#
# tests/scheduler/test_hcl.py parses this file and checks that it agrees with the renderer.
#
# Values come in through variables only. HCL does not re-evaluate a variable's value, but Nomad's client
# still expands ${...} in env, config, meta and service tags at run time (there is no escape for that in a
# value), so never pass a user-supplied string that contains "${". Inside this file a literal "${" is
# written "$${". The ${meta.*}, ${device.*}, ${node.*} and ${NOMAD_*} references below are left for Nomad.

variable "chute_id" {
  type        = string
  description = "uuid5(NAMESPACE_OID, \"<username>::chute::<name>\")"
}

variable "username" {
  type = string
}

variable "chute_name" {
  type = string
}

variable "bundle_sha256" {
  type        = string
  description = "sha256 of the chute's bundle; its first 12 hex digits are the chute version"
}

variable "secret_names" {
  type        = list(string)
  default     = []
  description = "names of the chute's secrets (environment variables); their values are in the job's Nomad Variable"
}

variable "scheduler_url" {
  type = string
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "count" {
  type        = number
  default     = 1
  description = "instances"
}

variable "eligible_gpus" {
  type        = list(string)
  description = "GPU catalog ids the chute's NodeSelector accepts (the agents publish the node's in meta chutes_gpu_model)"
}

variable "preferred_gpu" {
  type        = string
  default     = ""
  description = "the catalog id the scheduler's placement chose; empty for no preference"
}

variable "gpu_count" {
  type    = number
  default = 1
}

variable "min_vram_mib" {
  type        = number
  default     = 15258
  description = "min_vram_gb_per_gpu (decimal GB, as the catalog) in MiB, as NVML reports memory: floor(GB * 1e9 / 2^20)"
}

variable "cpu_mhz_per_gpu" {
  type    = number
  default = 1000
}

variable "memory_mb_per_gpu" {
  type    = number
  default = 4096
}

variable "runtime_command" {
  type        = list(string)
  default     = ["python3", "-m", "chutes.runtime"]
  description = "command line of the runtime on the node (raw_exec)"
}

job "chute" {
  id          = "chute-${var.chute_id}"
  name        = "chute-${var.chute_id}"
  type        = "service"
  priority    = 50
  datacenters = var.datacenters

  meta {
    chute_id      = var.chute_id
    chute_version = substr(var.bundle_sha256, 0, 12)
    chute_name    = var.chute_name
    username      = var.username
    managed_by    = "chutes"
    chute_secrets = join(",", sort(var.secret_names))
  }

  # Only nodes with an eligible GPU model (dynamic node meta set by chutes-agent).
  constraint {
    attribute = "${meta.chutes_gpu_model}"
    operator  = "set_contains_any"
    value     = join(",", var.eligible_gpus)
  }

  # Prefer the model the scheduler's placement chose (cheapest, tightest fit).
  dynamic "affinity" {
    for_each = var.preferred_gpu == "" ? [] : [var.preferred_gpu]
    content {
      attribute = "${meta.chutes_gpu_model}"
      operator  = "set_contains_any"
      value     = affinity.value
      weight    = 100
    }
  }

  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "10s"
    healthy_deadline  = "30m"
    progress_deadline = "40m"
    auto_revert       = false
  }

  group "instance" {
    count = var.count

    network {
      mode = "host"
      port "http" {}
    }

    service {
      name     = "chute-${var.chute_id}"
      provider = "consul"
      port     = "http"
      tags     = ["chutes", "user:${var.username}", "chute:${var.chute_name}"]

      meta {
        chute_id      = var.chute_id
        chute_version = substr(var.bundle_sha256, 0, 12)
      }

      check {
        name     = "ready"
        type     = "http"
        path     = "/_ready"
        port     = "http"
        interval = "5s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 3
      interval = "30m"
      delay    = "15s"
      mode     = "fail"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    ephemeral_disk {
      size = 2048
    }

    # Leave Consul before the kill, so the gateway stops routing to the instance first.
    shutdown_delay = "5s"

    meta {
      chute_id = var.chute_id
    }

    task "runtime" {
      driver = "raw_exec"

      config {
        command = var.runtime_command[0]
        args    = slice(var.runtime_command, 1, length(var.runtime_command))
      }

      # With the docker driver instead (what the scheduler renders for a chute with a built image):
      #   driver = "docker"
      #   config {
      #     image              = "<registry>/<user>/<name>:<tag>@sha256:<digest>"   # by digest
      #     command            = "python3"
      #     args               = ["-m", "chutes.runtime"]
      #     ports              = ["http"]
      #     image_pull_timeout = "1800s"
      #     init               = true
      #     pids_limit         = 16384
      #     shm_size           = 2147483648
      #     security_opt       = ["no-new-privileges"]
      #     labels             = { "io.chutes.chute_id" = var.chute_id }
      #     logging { type = "json-file"  config { max-size = "10m"  max-file = "3" } }
      #   }
      #   env { CHUTES_HOST = "0.0.0.0" }  (inside a container NOMAD_IP_http is the host's address)
      # No runtime, privileged, volumes, mount or devices: the NVIDIA device plugin's NVIDIA_VISIBLE_DEVICES
      # makes Nomad run a GPU task with the NVIDIA runtime, which exposes only the allocated GPUs.

      env {
        CHUTES_CHUTE_ID      = var.chute_id
        CHUTES_SCHEDULER_URL = var.scheduler_url
        CHUTES_BUNDLE_SHA256 = var.bundle_sha256
      }

      # The credentials: from the job's Nomad Variable, which Nomad's workload identity lets only this job's
      # tasks read (no ACL policy needed). A changed value re-renders the file and restarts the task.
      template {
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/chute-${var.chute_id}" }}
          CHUTES_INSTANCE_TOKEN="{{ index . "CHUTES_INSTANCE_TOKEN_${substr(var.bundle_sha256, 0, 12)}" }}"
          CHUTES_INVOKE_SECRET="{{ index . "CHUTES_INVOKE_SECRET" }}"
          %{~for name in sort(var.secret_names)}
          ${name}="{{ index . "${name}" }}"
          %{~endfor}
          {{ end }}
        EOT
        destination = "secrets/chutes.env"
        env         = true
        change_mode = "restart"
        splay       = "5s"
        perms       = "0600"
      }

      # Longer than the runtime's drain (CHUTES_DRAIN_TIMEOUT, 30 s): in-flight calls finish on SIGTERM.
      kill_signal  = "SIGTERM"
      kill_timeout = "40s"

      resources {
        cpu    = var.cpu_mhz_per_gpu * var.gpu_count
        memory = var.memory_mb_per_gpu * var.gpu_count

        device "nvidia/gpu" {
          count = var.gpu_count

          constraint {
            attribute = "${device.attr.memory}"
            operator  = ">="
            value     = "${var.min_vram_mib} MiB"
          }
        }
      }

      logs {
        max_files     = 5
        max_file_size = 20
      }
    }
  }
}
