package consul

import (
	"fmt"
	"net/http"
	"os"

	"github.com/hashicorp/consul/api"
)

// DialConfig configures the client that Dial returns. The composition root
// fills it from --consul-addr, so that no other package imports the client
// library. Everything else comes from the standard Consul environment, read
// by the client library: CONSUL_HTTP_TOKEN(_FILE), CONSUL_HTTP_AUTH,
// CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
// CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY,
// CONSUL_NAMESPACE and CONSUL_PARTITION.
type DialConfig struct {
	// Address of the agent's HTTP API: "host:port", or a URL with scheme
	// http://, https:// or unix://. Default CONSUL_HTTP_ADDR, else
	// 127.0.0.1:8500 (DESIGN.md; the client library's own default is
	// "localhost", which may resolve to ::1 where the agent does not listen).
	Address string
	// Token is the ACL token sent with every request. Default
	// CONSUL_HTTP_TOKEN (or the file CONSUL_HTTP_TOKEN_FILE names).
	Token string
	// Datacenter to query. Default: the agent's own.
	Datacenter string
	// HTTPClient sends the requests. Default: the client library's pooled
	// client (keep-alive connections, no overall timeout: every call of this
	// package carries its own deadline, and blocking queries are long),
	// with the TLS settings of the environment. A client given here is used
	// as is: the CONSUL_CACERT family is not applied to it.
	HTTPClient *http.Client
}

// DefaultAddress is the agent address used when neither DialConfig.Address
// nor CONSUL_HTTP_ADDR says otherwise.
const DefaultAddress = "127.0.0.1:8500"

// Dial returns a client for the Consul agent at cfg.Address. It does not
// contact the agent: the first call of a role does, and fails or backs off
// while the agent is unreachable.
func Dial(cfg DialConfig) (*api.Client, error) {
	c := api.DefaultConfig()
	switch {
	case cfg.Address != "":
		c.Address = cfg.Address
	case os.Getenv(api.HTTPAddrEnvName) == "":
		c.Address = DefaultAddress
	}
	if cfg.Token != "" {
		c.Token = cfg.Token
	}
	c.Datacenter = cfg.Datacenter
	c.HttpClient = cfg.HTTPClient
	client, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("%w: Address %q: %v", ErrInvalidConfig, c.Address, err)
	}
	return client, nil
}
