// Calls inference.GRPCInferenceService with Node's own gRPC client,
// @grpc/grpc-js, and the service definition loaded at run time by
// @grpc/proto-loader from the repository's .proto (PROTO). It prints one
// JSON object on stdout for grpc_test.go to check.
//
//   PROTO=… ADDR=127.0.0.1:15001 MODEL=m ROWS=3 node infer.mjs check
//
// check: for each row i (four FP32 values, as grpc_test.go makes them),
// ModelInfer once with raw_input_contents and once with typed contents;
// prints each answer's output bytes (base64, little-endian FP32), the form
// it came in, and the status of a malformed call (15 bytes for 16).
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const def = protoLoader.loadSync(process.env.PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const { inference } = grpc.loadPackageDefinition(def);
const client = new inference.GRPCInferenceService(process.env.ADDR, grpc.credentials.createInsecure());
const model = process.env.MODEL;

function row(i) {
  return [i, i + 0.5, -i, i * 1.25];
}

function fp32(values) {
  return Buffer.from(new Float32Array(values).buffer);
}

function infer(req) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 10000);
    client.ModelInfer(req, { deadline }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

function input() {
  return { name: 'x', datatype: 'FP32', shape: [1, 4] };
}

async function check(rows) {
  const out = { raw: [], typed: [], rawForm: [], typedForm: [] };
  for (let i = 0; i < rows; i++) {
    const raw = await infer({ model_name: model, inputs: [input()], raw_input_contents: [fp32(row(i))] });
    out.raw.push(Buffer.from(raw.raw_output_contents[0]).toString('base64'));
    out.rawForm.push(raw.raw_output_contents.length === 1 ? 'raw' : 'typed');
    const typed = await infer({ model_name: model, inputs: [{ ...input(), contents: { fp32_contents: row(i) } }] });
    const t = typed.raw_output_contents.length > 0
      ? Buffer.from(typed.raw_output_contents[0])
      : fp32(typed.outputs[0].contents.fp32_contents);
    out.typed.push(t.toString('base64'));
    out.typedForm.push(typed.raw_output_contents.length > 0 ? 'raw' : 'typed');
  }
  try {
    await infer({ model_name: model, inputs: [input()], raw_input_contents: [fp32(row(0)).subarray(0, 15)] });
    out.malformed = { code: 0 };
  } catch (err) {
    out.malformed = { code: err.code, details: err.details };
  }
  return out;
}

const mode = process.argv[2];
if (mode !== 'check') {
  console.error(`usage: node infer.mjs check (got ${mode})`);
  process.exit(2);
}
const res = await check(Number(process.env.ROWS || 3));
client.close();
process.stdout.write(JSON.stringify(res));
