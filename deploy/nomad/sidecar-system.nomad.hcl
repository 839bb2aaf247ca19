# One BlitzScale sidecar per host, for every app on that host.
#
# A system job places one allocation on every eligible client. The task uses
# host networking and listens on the host's loopback, so any process on the
# host (Nomad tasks with host networking, or anything run outside Nomad) points
# its OpenAI SDK at http://127.0.0.1:8089/v1, and nothing off the host can
# reach it. Tasks in bridge-mode allocations cannot reach the host's loopback:
# give those the prestart variant (sidecar-prestart.nomad.hcl) instead.
#
#   nomad job run -var 'blitzscale_artifact=https://artifacts.internal/blitzscale/v0.1.0/blitzscale_linux_amd64.tar.gz' \
#                 deploy/nomad/sidecar-system.nomad.hcl
#
# kill_timeout is capped by the Nomad client's max_kill_timeout (default 30s):
# raise it to at least 45s on the clients, or open streams are cut on updates.

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "service" {
  type        = string
  description = "Consul service name of the inference instances (the sidecar's --service)."
  default     = "llm"
}

variable "blitzscale_artifact" {
  type        = string
  description = "go-getter source of the archive (or plain file) holding the blitzscale binary."
  default     = "https://artifacts.internal/blitzscale/v0.1.0/blitzscale_linux_amd64.tar.gz"
}

variable "blitzscale_binary" {
  type        = string
  description = "Path of the binary inside the task directory once the artifact is unpacked."
  default     = "local/blitzscale"
}

job "blitzscale-sidecar" {
  type        = "system"
  datacenters = var.datacenters

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # Replace one host's sidecar at a time: its apps see 503 + Retry-After only
  # for the moment between the old process closing its listener and the new
  # one binding it.
  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "2m"
  }

  group "sidecar" {
    network {
      mode = "host"
    }

    task "blitzscale" {
      # exec isolates the binary in a chroot and cgroup; raw_exec works too
      # with the same config where exec is not enabled on the clients.
      driver = "exec"

      artifact {
        source      = var.blitzscale_artifact
        destination = "local/"
      }

      config {
        command = var.blitzscale_binary
        args    = ["sidecar"]
      }

      # Every flag reads BLITZ_<FLAG_IN_UPPER_SNAKE>; see `blitzscale sidecar -h`.
      env {
        BLITZ_LISTEN           = "127.0.0.1:8089"
        BLITZ_REGISTRY         = "consul"
        BLITZ_SERVICE          = var.service
        BLITZ_SIDECAR_ID       = "${node.unique.name}"
        BLITZ_SHUTDOWN_TIMEOUT = "30s"
        BLITZ_LOG_FORMAT       = "json"
        # The sidecar shares the host with the app: two cores carry about
        # 20,000 small requests a second (docs/bench.md), and without a cap
        # Go schedules on every core of the host.
        GOMAXPROCS = "2"
      }

      # The same rendering as the prestart job, so one Consul agent setup
      # serves both. On host networking 127.0.0.1:8500 works as well when the
      # agent listens only on loopback. A Consul ACL token goes in the same
      # file, for example from a Nomad Variable:
      # {{ with nomadVar "nomad/jobs/blitzscale-sidecar" }}CONSUL_HTTP_TOKEN={{ .consul_token }}{{ end }}
      template {
        destination = "secrets/blitzscale.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          BLITZ_CONSUL_ADDR={{ env "attr.unique.network.ip-address" }}:8500
        EOT
      }

      # Longer than --shutdown-timeout (30s) so that open streams finish
      # before Nomad sends SIGKILL.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      restart {
        attempts = 10
        interval = "5m"
        delay    = "5s"
        mode     = "delay"
      }

      resources {
        cpu        = 500
        memory     = 256
        memory_max = 512
      }

      logs {
        max_files     = 5
        max_file_size = 10
      }
    }
  }
}
