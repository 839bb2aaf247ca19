# An SGLang instance serving Qwen2.5 7B, registered with the local Consul
# agent from its configuration directory. See vllm-llama.hcl for the
# contract.
service {
  id      = "sglang-gpu-b-0"
  name    = "llm"
  address = "10.0.0.6"
  port    = 30000

  tags = [
    "model=Qwen/Qwen2.5-7B-Instruct",
  ]

  meta = {
    engine        = "sglang"
    zone          = "b"
    max_model_len = "32768"
    metrics_path  = "/metrics"
  }

  # An H100 next to the A100 of vllm-llama.hcl: twice the share.
  weights {
    passing = 2
    warning = 1
  }

  # SGLang answers GET /health with 200 while its scheduler runs
  # (/health_generate also runs a one-token generation: stronger, but it
  # costs GPU time every interval).
  check {
    id                       = "sglang-gpu-b-0-health"
    name                     = "SGLang /health"
    http                     = "http://10.0.0.6:30000/health"
    method                   = "GET"
    interval                 = "5s"
    timeout                  = "2s"
    success_before_passing   = 3
    failures_before_critical = 2
  }
}
