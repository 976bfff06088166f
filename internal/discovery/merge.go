package discovery

import (
	"slices"
	"sort"

	"github.com/batchmesh/batchmesh/internal/config"
)

// Merge returns the config to serve from the file's (nil when there is no
// file; config.LoadPartial's, whose models may list no versions) and the
// versions found:
//
//   - a model of the file keeps its protocol, batching and cache settings;
//     its versions are the ones found when any are, else the file's own;
//   - a model found but not in the file gets the defaults (protocol v2,
//     config.DefaultBatching, config.DefaultCache);
//   - a model left with no version is left out, as is one whose versions
//     all have weight 0.
//
// The result may list no model. It shares nothing with its arguments
// but the endpoints' strings.
func Merge(file *config.Config, found map[string][]config.Version) *config.Config {
	out := &config.Config{CacheBytes: config.DefaultCacheBytes, Weights: config.DefaultWeights}
	if file != nil {
		out.CacheBytes, out.Weights, out.OutlierDetection = file.CacheBytes, file.Weights, file.OutlierDetection
	}
	inFile := map[string]bool{}
	add := func(m config.Model, vs []config.Version) {
		weight := 0
		for _, v := range vs {
			weight += v.Weight
		}
		if weight == 0 {
			return
		}
		m.Versions = make([]config.Version, len(vs))
		for i, v := range vs {
			v.Endpoints = slices.Clone(v.Endpoints)
			v.ServiceAddresses = slices.Clone(v.ServiceAddresses)
			m.Versions[i] = v
		}
		out.Models = append(out.Models, m)
	}
	if file != nil {
		for _, m := range file.Models {
			inFile[m.Name] = true
			vs := found[m.Name]
			if len(vs) == 0 {
				vs = m.Versions
			}
			add(m, vs)
		}
	}
	names := make([]string, 0, len(found))
	for name := range found {
		if !inFile[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		add(config.Model{Name: name, Protocol: config.DefaultProtocol, Batching: config.DefaultBatching(), Cache: config.DefaultCache()}, found[name])
	}
	return out
}

// Protocols returns the protocol function of Build for a file's models
// (nil: none): a model's own, config.DefaultProtocol for the others.
func Protocols(file *config.Config) func(model string) string {
	byName := map[string]string{}
	if file != nil {
		for _, m := range file.Models {
			byName[m.Name] = m.Protocol
		}
	}
	return func(model string) string {
		if p, ok := byName[model]; ok {
			return p
		}
		return config.DefaultProtocol
	}
}
