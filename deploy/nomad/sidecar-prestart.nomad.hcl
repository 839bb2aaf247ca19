# An application with its own BlitzScale sidecar, in one allocation.
#
# The group uses bridge networking, so both tasks share one network namespace:
# the app reaches the sidecar at http://127.0.0.1:8089/v1 and nothing outside
# the allocation can. The sidecar is a prestart sidecar task: Nomad starts it
# before the app, keeps it running for the life of the allocation and, since
# Nomad 1.3.2, stops it only after the app has exited, so the app's last
# requests still have their router.
#
#   nomad job run -var 'app_image=registry.internal/chat-api:1.4' \
#                 -var 'blitzscale_artifact=https://artifacts.internal/blitzscale/v0.1.0/blitzscale_linux_amd64.tar.gz' \
#                 deploy/nomad/sidecar-prestart.nomad.hcl
#
# Operators' notes:
# - kill_timeout is capped by the Nomad client's max_kill_timeout (default 30s):
#   raise it to at least 45s on clients that run these jobs, or open streams are
#   cut when the sidecar drains.
# - In bridge mode 127.0.0.1 is the allocation's loopback, not the host's, so the
#   Consul agent is reached on the node's address: its HTTP API must listen there
#   (Consul's addresses.http / client_addr).
# - A prestart sidecar is started, not waited for: the app may see 503
#   no_healthy_upstream (with Retry-After) for the first second until discovery
#   has synced, and should retry as the OpenAI SDKs do by default.

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "service" {
  type        = string
  description = "Consul service name of the inference instances (the sidecar's --service)."
  default     = "llm"
}

variable "app_image" {
  type        = string
  description = "The application's container image; it speaks OpenAI to 127.0.0.1:8089."
  default     = "registry.internal/chat-api:latest"
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

job "chat-api" {
  type        = "service"
  datacenters = var.datacenters

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "app" {
    count = 2

    network {
      mode = "bridge"

      port "http" {
        to = 8080
      }
    }

    task "blitzscale" {
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

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
        BLITZ_LISTEN   = "127.0.0.1:8089"
        BLITZ_REGISTRY = "consul"
        BLITZ_SERVICE  = var.service
        # One load record per allocation: allocations of this group share a
        # host name, so the default (host name) would make them overwrite
        # each other's record.
        BLITZ_SIDECAR_ID       = "${NOMAD_ALLOC_ID}"
        BLITZ_SHUTDOWN_TIMEOUT = "30s"
        BLITZ_LOG_FORMAT       = "json"
        # The sidecar shares the host with the app: two cores carry about
        # 20,000 small requests a second (docs/bench.md), and without a cap
        # Go schedules on every core of the host.
        GOMAXPROCS = "2"
      }

      # The Consul agent runs on the host, outside the allocation's network
      # namespace: render its address from the node's fingerprinted IP.
      # A Consul ACL token goes in the same file, for example from a Nomad
      # Variable: {{ with nomadVar "nomad/jobs/chat-api" }}CONSUL_HTTP_TOKEN={{ .consul_token }}{{ end }}
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
        attempts = 5
        interval = "5m"
        delay    = "5s"
        mode     = "delay"
      }

      resources {
        cpu        = 200
        memory     = 128
        memory_max = 256
      }

      logs {
        max_files     = 5
        max_file_size = 10
      }
    }

    task "app" {
      driver = "docker"

      config {
        image = var.app_image
        ports = ["http"]
      }

      env {
        OPENAI_BASE_URL = "http://127.0.0.1:8089/v1"
        OPENAI_API_KEY  = "unused"
      }

      # The app drains its own requests first; the sidecar is stopped after it.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
