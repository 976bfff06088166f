package inference

// Request is one inference request of the Open Inference Protocol: a set of
// named input tensors and, optionally, which outputs to return.
//
// Model and Version come from the route, not the body. A decoded Request may
// alias the buffer it was decoded from (the decoder says so); a Request that
// crosses a goroutine must own its bytes.
type Request struct {
	Model      string
	Version    string
	ID         string
	Parameters Parameters
	Inputs     []Tensor
	Outputs    []OutputSpec // nil: every output
}

// OutputSpec asks for one output by name.
type OutputSpec struct {
	Name       string
	Parameters Parameters
}

// Parameter names of the binary tensor extension.
const (
	ParamBinaryDataSize   = "binary_data_size"
	ParamBinaryData       = "binary_data"
	ParamBinaryDataOutput = "binary_data_output"
)

// Input returns the input with the given name, or nil.
func (r *Request) Input(name string) *Tensor {
	for i := range r.Inputs {
		if r.Inputs[i].Name == name {
			return &r.Inputs[i]
		}
	}
	return nil
}

// Wants reports whether output name is to be returned.
func (r *Request) Wants(name string) bool {
	if r.Outputs == nil {
		return true
	}
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			return true
		}
	}
	return false
}

// BinaryOutput reports whether output name should be returned as binary
// tensor data: the output's own binary_data parameter if set, else the
// request's binary_data_output, else false.
func (r *Request) BinaryOutput(name string) bool {
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			if v, ok := r.Outputs[i].Parameters.Bool(ParamBinaryData); ok {
				return v
			}
			break
		}
	}
	v, _ := r.Parameters.Bool(ParamBinaryDataOutput)
	return v
}

// MaxRows bounds the batch dimension of one request. Rows of zero bytes
// (a shape like [2^40, 0]) would otherwise make a tiny body claim more rows
// than memory can index.
const MaxRows = 1 << 20

// Rows returns the batch size shared by every input (dim 0), failing when an
// input is a scalar, the inputs disagree or there are more than MaxRows.
func (r *Request) Rows() (int, error) {
	if len(r.Inputs) == 0 {
		return 0, Errorf(KindInvalid, "request has no inputs")
	}
	rows := -1
	for i := range r.Inputs {
		n, err := r.Inputs[i].BatchRows()
		if err != nil {
			return 0, err
		}
		if n > MaxRows {
			return 0, Errorf(KindInvalid, "input %q has %d rows (dim 0); at most %d are allowed", r.Inputs[i].Name, n, MaxRows)
		}
		if rows >= 0 && n != rows {
			return 0, Errorf(KindInvalid, "input %q has %d rows (dim 0) but input %q has %d; every input needs the same batch size",
				r.Inputs[i].Name, n, r.Inputs[0].Name, rows)
		}
		rows = n
	}
	return rows, nil
}

// Response is the answer to a Request.
type Response struct {
	ModelName    string
	ModelVersion string
	ID           string
	Parameters   Parameters
	Outputs      []Tensor
}

// Output returns the output with the given name, or nil.
func (r *Response) Output(name string) *Tensor {
	for i := range r.Outputs {
		if r.Outputs[i].Name == name {
			return &r.Outputs[i]
		}
	}
	return nil
}

// EndpointLoad is what a balancer knows of one endpoint when it picks where
// a batch goes.
type EndpointLoad struct {
	InFlightRows int
	Weight       int  // > 0; 0 counts as 1
	Eligible     bool // healthy and with capacity for this batch
}
