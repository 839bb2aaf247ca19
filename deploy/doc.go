// Package deploy holds no code: it is the folder of files that run and watch
// the sidecar in production, and deploy_test.go keeps them honest.
//
//   - nomad/: the sidecar as a prestart sidecar task beside an app (bridge
//     networking), and as a system job (one per host, host networking);
//   - systemd/: a hardened unit, an example --config file and environment file;
//   - prometheus/: a scrape configuration and alerting rules;
//   - grafana/: a dashboard over the same metrics;
//   - consul/: Consul service definitions for inference instances.
//
// The tests parse every file (HCL with hashicorp/hcl/v2, YAML, JSON, the
// unit's INI lines) and check what they name against the real program: each
// --flag, config key and BLITZ_* variable must be a flag that
// `blitzscale sidecar -h` lists, and each metric and label in a PromQL
// expression must be one of DESIGN.md's minimum set. A renamed flag or metric
// therefore fails `go test ./deploy/` instead of a deployment.
//
// This package must not import the router's packages: it checks the built
// binary, as an operator would use it.
package deploy
