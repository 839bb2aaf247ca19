# A vLLM instance serving Llama 3.1 8B and a LoRA adapter, registered with
# the local Consul agent from its configuration directory (no registrant
# process: the agent health-checks the engine itself). Put this file in the
# agent's -config-dir and run `consul reload`.
#
# Contract (DESIGN.md, "Registry contract"): service name = the sidecars'
# --service (default "llm"); one tag model=<id> per served model or adapter;
# scalar attributes in meta; weight from weights.passing. Only passing
# instances are routed to.
service {
  id      = "vllm-gpu-a-0"
  name    = "llm"
  address = "10.0.0.5"
  port    = 8000

  tags = [
    "model=meta-llama/Llama-3.1-8B-Instruct",
    "model=meta-llama/Llama-3.1-8B-Instruct:sql-lora",
  ]

  meta = {
    engine        = "vllm"
    zone          = "a"
    max_model_len = "8192"
    metrics_path  = "/metrics"
  }

  # Share of load relative to other instances (a larger GPU: a larger
  # number). Warning is only used by Consul DNS; sidecars route to passing
  # instances only.
  weights {
    passing = 1
    warning = 1
  }

  # vLLM answers GET /health with 200 once the engine is up, and with an
  # error when its engine loop died. Two consecutive failures take the
  # instance out of routing; three successes bring it back, so a flapping
  # engine does not bounce in and out.
  check {
    id                       = "vllm-gpu-a-0-health"
    name                     = "vLLM /health"
    http                     = "http://10.0.0.5:8000/health"
    method                   = "GET"
    interval                 = "5s"
    timeout                  = "2s"
    success_before_passing   = 3
    failures_before_critical = 2
  }
}
