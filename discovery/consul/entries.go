package consul

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
)

// The Consul side of the registry contract (DESIGN.md): how a service
// registration describes an inference instance.
const (
	// ModelTagPrefix starts each tag that names a served model or adapter:
	// one tag "model=<model-id>" per model.
	ModelTagPrefix = "model="
	// MetaDraining is the Meta key that, set to "true", takes an instance
	// out of new routing. It is carried in Instance.Draining, not in Meta.
	MetaDraining = "draining"
)

// entryProblem is an entry left out of a snapshot, and why.
type entryProblem struct {
	key string // "<service-id>@<node>": stable across responses, for logging once
	err error
}

// instancesFromEntries turns the entries of /v1/health/service/<service>
// into instances. It is pure: no I/O, no clock, the same output for the
// same input whatever its order. Entries that break the contract are left
// out and reported; so is every entry after the first with an id already
// taken (Consul service ids are unique per agent, not per cluster), the
// first being the one on the node whose name sorts first.
func instancesFromEntries(entries []*api.ServiceEntry) ([]discovery.Instance, []entryProblem) {
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b *api.ServiceEntry) int {
		return cmp.Or(cmp.Compare(serviceID(a), serviceID(b)), cmp.Compare(nodeName(a), nodeName(b)))
	})
	var (
		out      []discovery.Instance
		problems []entryProblem
	)
	for _, e := range sorted {
		key := serviceID(e) + "@" + nodeName(e)
		in, err := instanceFromEntry(e)
		if err == nil && len(out) > 0 && out[len(out)-1].ID == in.ID {
			err = fmt.Errorf("%w: %w: %q is also registered on another node", ErrInvalidValue, discovery.ErrDuplicateID, in.ID)
		}
		if err != nil {
			problems = append(problems, entryProblem{key: key, err: err})
			continue
		}
		out = append(out, in)
	}
	return out, problems
}

// instanceFromEntry maps one health entry to an Instance:
//
//   - ID from Service.ID;
//   - Address from Service.Address, else Node.Address (Consul's documented
//     fallback when a service registers no address), joined with
//     Service.Port;
//   - Models from the tags "model=<id>", in tag order, without repeats;
//     other tags are ignored;
//   - Meta from Service.Meta (engine, zone, max_model_len, metrics_path…),
//     without the draining key;
//   - Weight from Weights.Passing (0 means the default);
//   - Draining when Meta draining=true, or when the service or its node is
//     in maintenance mode. A ?passing query already leaves maintenance out:
//     routing-wise "draining" and "gone" both stop new requests, and the
//     sidecar never cuts open streams in either case. The check here keeps
//     the function right for any entry it is given.
func instanceFromEntry(e *api.ServiceEntry) (discovery.Instance, error) {
	if e == nil || e.Service == nil {
		return discovery.Instance{}, fmt.Errorf("%w: entry without a service", ErrInvalidValue)
	}
	s := e.Service
	host := s.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	in := discovery.Instance{
		ID:     s.ID,
		Models: modelsFromTags(s.Tags),
		Weight: s.Weights.Passing,
	}
	if host != "" && s.Port != 0 {
		in.Address = net.JoinHostPort(host, strconv.Itoa(s.Port))
	} else if host != "" {
		in.Address = host // Validate names the missing port
	}
	if len(s.Meta) > 0 {
		in.Meta = maps.Clone(s.Meta)
		if v, ok := in.Meta[MetaDraining]; ok {
			delete(in.Meta, MetaDraining)
			draining, err := strconv.ParseBool(v)
			if err != nil {
				return discovery.Instance{}, fmt.Errorf("%w: instance %q: meta[%q] %q: want true or false", ErrInvalidValue, s.ID, MetaDraining, v)
			}
			in.Draining = draining
		}
		if len(in.Meta) == 0 {
			in.Meta = nil
		}
	}
	if inMaintenance(e) {
		in.Draining = true
	}
	if err := in.Validate(); err != nil {
		return discovery.Instance{}, fmt.Errorf("%w: %w", ErrInvalidValue, err)
	}
	return in, nil
}

func modelsFromTags(tags []string) []string {
	var models []string
	for _, t := range tags {
		m, ok := strings.CutPrefix(t, ModelTagPrefix)
		if ok && !slices.Contains(models, m) {
			models = append(models, m)
		}
	}
	return models
}

// inMaintenance reports a critical maintenance check on the entry: the
// service's own ("_service_maintenance:<id>") or its node's
// ("_node_maintenance").
func inMaintenance(e *api.ServiceEntry) bool {
	for _, c := range e.Checks {
		if c == nil || c.Status != api.HealthCritical {
			continue
		}
		if c.CheckID == api.NodeMaint || c.CheckID == api.ServiceMaintPrefix+e.Service.ID {
			return true
		}
	}
	return false
}

func serviceID(e *api.ServiceEntry) string {
	if e == nil || e.Service == nil {
		return ""
	}
	return e.Service.ID
}

func nodeName(e *api.ServiceEntry) string {
	if e == nil || e.Node == nil {
		return ""
	}
	return e.Node.Node
}
