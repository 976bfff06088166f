package modelrt

import (
	"errors"
	"fmt"
	"strings"
)

// maxModelName bounds a model name's length.
const maxModelName = 128

// modelFlagForm is the model flag's syntax, for error messages.
const modelFlagForm = "want NAME=KIND:ARG with KIND mlp:PATH (a safetensors MLP), sim:PROFILE or embed:PROFILE (" +
	"e.g. bert=sim:h200/bert-base, mlp=mlp:weights.safetensors, e=embed:h200/minilm-l6)"

// ParseModelFlag parses a model flag, NAME=KIND:ARG, and builds the model:
//
//	NAME=mlp:PATH       an MLP loaded from the safetensors file PATH (LoadMLP)
//	NAME=sim:PROFILE    a simulator (ParseSim), e.g. sim:h200/bert-base or
//	                    sim:linear/5ms+200us
//	NAME=embed:PROFILE  a simulated embedding model (Embed) with a Sim's
//	                    latency, e.g. embed:h200/minilm-l6
//
// NAME is 1 to 128 letters, digits, '.', '_' or '-', starting with a letter
// or digit, as it appears in URL paths.
func ParseModelFlag(s string) (name string, m Model, err error) {
	name, spec, ok := strings.Cut(s, "=")
	if !ok {
		return "", nil, fmt.Errorf("modelrt: model flag %q: missing '='; %s", s, modelFlagForm)
	}
	if err := checkModelName(name); err != nil {
		return "", nil, fmt.Errorf("modelrt: model flag %q: %w", s, err)
	}
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "mlp":
		if arg == "" {
			return "", nil, fmt.Errorf("modelrt: model %q: mlp needs a weights file: %s=mlp:PATH", name, name)
		}
		mlp, err := loadMLP(arg)
		if err != nil {
			return "", nil, fmt.Errorf("modelrt: model %q: %w", name, err)
		}
		return name, mlp, nil
	case "sim":
		if arg == "" {
			return "", nil, fmt.Errorf("modelrt: model %q: sim needs a profile: %s=sim:PROFILE with PROFILE one of %s, or linear/BASE+PERROW",
				name, name, strings.Join(ProfileNames(), ", "))
		}
		sim, err := parseSim(arg)
		if err != nil {
			return "", nil, fmt.Errorf("modelrt: model %q: %w", name, err)
		}
		return name, sim, nil
	case "embed":
		if arg == "" {
			return "", nil, fmt.Errorf("modelrt: model %q: embed needs a profile: %s=embed:PROFILE with PROFILE one of %s, or linear/BASE+PERROW",
				name, name, strings.Join(ProfileNames(), ", "))
		}
		e, err := parseEmbed(arg)
		if err != nil {
			return "", nil, fmt.Errorf("modelrt: model %q: %w", name, err)
		}
		return name, e, nil
	}
	return "", nil, fmt.Errorf("modelrt: model flag %q: unknown kind %q; allowed: mlp, sim, embed; %s", s, kind, modelFlagForm)
}

// checkModelName checks a model name (see ParseModelFlag).
func checkModelName(name string) error {
	if name == "" {
		return errors.New("empty model name")
	}
	if len(name) > maxModelName {
		return fmt.Errorf("model name is %d bytes; at most %d", len(name), maxModelName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("model name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", name)
		}
	}
	return nil
}
