package inference

// DataType is a tensor element type of the Open Inference Protocol.
// The zero value is Invalid.
type DataType uint8

// The datatypes of the Open Inference Protocol v2, plus Triton's BF16.
const (
	Invalid DataType = iota
	Bool
	Uint8
	Uint16
	Uint32
	Uint64
	Int8
	Int16
	Int32
	Int64
	FP16
	BF16
	FP32
	FP64
	Bytes
)

var dataTypeNames = [...]string{
	Invalid: "INVALID",
	Bool:    "BOOL",
	Uint8:   "UINT8",
	Uint16:  "UINT16",
	Uint32:  "UINT32",
	Uint64:  "UINT64",
	Int8:    "INT8",
	Int16:   "INT16",
	Int32:   "INT32",
	Int64:   "INT64",
	FP16:    "FP16",
	BF16:    "BF16",
	FP32:    "FP32",
	FP64:    "FP64",
	Bytes:   "BYTES",
}

var dataTypeSizes = [...]int{
	Bool: 1, Uint8: 1, Uint16: 2, Uint32: 4, Uint64: 8,
	Int8: 1, Int16: 2, Int32: 4, Int64: 8,
	FP16: 2, BF16: 2, FP32: 4, FP64: 8, Bytes: 0,
}

// DataTypeNames lists the wire names of every valid datatype, for error
// messages that say what is allowed.
const DataTypeNames = "BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES"

// ParseDataType returns the datatype with wire name s (case-sensitive, as in
// the protocol), or Invalid and false.
func ParseDataType(s string) (DataType, bool) {
	for i := Bool; i <= Bytes; i++ {
		if dataTypeNames[i] == s {
			return i, true
		}
	}
	return Invalid, false
}

// String returns the wire name, e.g. "FP32".
func (d DataType) String() string {
	if int(d) < len(dataTypeNames) {
		return dataTypeNames[d]
	}
	return "INVALID"
}

// Size returns the bytes per element, or 0 for BYTES (variable) and Invalid.
func (d DataType) Size() int {
	if int(d) < len(dataTypeSizes) {
		return dataTypeSizes[d]
	}
	return 0
}

// Valid reports whether d is one of the defined datatypes.
func (d DataType) Valid() bool { return d > Invalid && d <= Bytes }
