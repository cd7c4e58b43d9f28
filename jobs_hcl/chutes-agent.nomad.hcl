# chutes-agent as a Nomad system job: one agent on every GPU client, the alternative to the systemd unit
# (agent/systemd/chutes-agent.service). Use one or the other on a host, not both. See docs/agent.md.
#
#   nomad var put nomad/jobs/chutes-agent consul_token=... nomad_token=...   # optional, with ACLs
#   nomad job run jobs_hcl/chutes-agent.nomad.hcl

variable "agent_command" {
  description = "Path of chutes-agent on the clients (the chutes-nomad package installed in a venv)."
  type        = string
  default     = "/opt/chutes/venv/bin/chutes-agent"
}

variable "metrics_port" {
  description = "Port of the agent's Prometheus metrics on each client."
  type        = number
  default     = 9477
}

variable "node_pool" {
  description = "Node pool of the GPU clients."
  type        = string
  default     = "default"
}

job "chutes-agent" {
  type        = "system"
  datacenters = ["*"]
  node_pool   = var.node_pool
  priority    = 90

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # Uncomment to keep the agent off CPU-only clients (it would publish "no NVIDIA GPU found" there):
  # constraint {
  #   attribute = "${meta.gpu}"
  #   value     = "true"
  # }

  update {
    max_parallel = 5
    stagger      = "10s"
  }

  group "agent" {
    restart {
      attempts = 10
      interval = "5m"
      delay    = "10s"
      mode     = "delay"
    }

    task "agent" {
      # raw_exec, not exec or docker: the agent must see every /dev/nvidia* without a `device "nvidia/gpu"`
      # block, because such a block would reserve GPUs and take them away from chutes. exec's cgroup device
      # rules would hide the GPUs that are not reserved. The agent itself holds no privileges it needs root for;
      # run the Nomad client's raw_exec tasks as an unprivileged user where your setup allows it.
      driver = "raw_exec"

      config {
        command = var.agent_command
        args    = ["run", "--metrics-port", "${var.metrics_port}", "--metrics-host", "0.0.0.0"]
      }

      env {
        CHUTES_NODE_ID       = "${node.unique.name}"
        CHUTES_NOMAD_NODE_ID = "${node.unique.id}"
        NOMAD_ADDR           = "http://127.0.0.1:4646"
        CONSUL_HTTP_ADDR     = "127.0.0.1:8500"
      }

      # ACL tokens from Nomad Variables, when the cluster uses ACLs (nothing is rendered otherwise).
      template {
        destination = "${NOMAD_SECRETS_DIR}/agent.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ if nomadVarExists "nomad/jobs/chutes-agent" }}{{ with nomadVar "nomad/jobs/chutes-agent" }}
          {{ with .consul_token }}CONSUL_HTTP_TOKEN={{ . }}{{ end }}
          {{ with .nomad_token }}NOMAD_TOKEN={{ . }}{{ end }}
          {{ end }}{{ end }}
        EOT
      }

      # SIGTERM makes the agent deregister from Consul before it exits.
      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
