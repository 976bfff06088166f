package codec

// ServerMetadata is the body of GET /v2.
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// ExtensionBinaryTensorData is the extension name a server lists in
// ServerMetadata.Extensions when it accepts and returns binary tensors.
const ExtensionBinaryTensorData = "binary_tensor_data"

// TensorMetadata describes one input or output; a -1 dimension is variable.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata is the body of GET /v2/models/{m}[/versions/{v}].
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// ModelReady is the body of GET /v2/models/{m}[/versions/{v}]/ready.
type ModelReady struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// Live is the body of GET /v2/health/live; Ready of GET /v2/health/ready.
type Live struct {
	Live bool `json:"live"`
}

// Ready is the body of GET /v2/health/ready.
type Ready struct {
	Ready bool `json:"ready"`
}
