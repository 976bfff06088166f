// The official OpenAI client (npm "openai") pointed at a batchmesh sidecar,
// each answer compared with the runtime's direct answer.
//
//   SIDECAR_URL=http://127.0.0.1:15001/v1 DIRECT_URL=http://127.0.0.1:8000/v1 \
//   MODEL=e node embeddings.mjs check        # the correctness checks
//   ... node embeddings.mjs concurrent 64    # 64 concurrent one-string calls
//
// It prints one JSON line of results and exits 1 on the first mismatch.
import OpenAI from "openai";

const [mode = "check", nArg = "64"] = process.argv.slice(2);
const model = process.env.MODEL ?? "e";
const sidecar = new OpenAI({ baseURL: process.env.SIDECAR_URL, apiKey: "unused", maxRetries: 0 });
const direct = new OpenAI({ baseURL: process.env.DIRECT_URL, apiKey: "unused", maxRetries: 0 });

function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

// same compares two answers vector by vector, value by value.
function same(what, got, want) {
  if (got.data.length !== want.data.length) fail(`${what}: ${got.data.length} vectors, want ${want.data.length}`);
  got.data.forEach((d, i) => {
    if (d.index !== i) fail(`${what}: data[${i}].index is ${d.index}`);
    const w = want.data[i].embedding;
    if (d.embedding.length !== w.length) fail(`${what}: vector ${i} has ${d.embedding.length} values, want ${w.length}`);
    for (let j = 0; j < w.length; j++) {
      if (d.embedding[j] !== w[j]) fail(`${what}: vector ${i} value ${j} is ${d.embedding[j]}, direct ${w[j]}`);
    }
  });
}

async function both(what, params) {
  const [got, want] = await Promise.all([sidecar.embeddings.create(params), direct.embeddings.create(params)]);
  same(what, got, want);
  return got;
}

async function check() {
  const results = {};
  const one = await both("one string", { model, input: "the quick brown fox" });
  results.one = { dims: one.data[0].embedding.length, usage: one.usage };
  const hundred = Array.from({ length: 100 }, (_, i) => `document number ${i}: ${"word ".repeat(i % 7)}`);
  const many = await both("100 strings", { model, input: hundred });
  results.hundred = { vectors: many.data.length, usage: many.usage };
  // The same inputs one by one give the vectors of the 100-input call.
  const single = await sidecar.embeddings.create({ model, input: hundred[57] });
  same("input 57 alone", { data: [{ ...single.data[0], index: 0 }] }, { data: [{ ...many.data[57], index: 0 }] });
  await both("float", { model, input: hundred.slice(0, 5), encoding_format: "float" });
  const dims = await both("dimensions", { model, input: hundred.slice(0, 3), dimensions: 64 });
  if (dims.data[0].embedding.length !== 64) fail(`dimensions 64 gave ${dims.data[0].embedding.length} values`);
  const norm = Math.hypot(...dims.data[0].embedding);
  if (Math.abs(norm - 1) > 1e-5) fail(`a 64-dimension vector has length ${norm}`);
  await both("token ids", { model, input: [[1, 2, 3], [4, 5]] });
  try {
    await sidecar.embeddings.create({ model, input: "x", dimensions: 0 });
    fail("dimensions 0 was accepted");
  } catch (e) {
    if (!(e instanceof OpenAI.BadRequestError)) fail(`invalid request: ${e?.constructor?.name}, want BadRequestError: ${e}`);
    results.invalid = { status: e.status, message: e.error?.message ?? e.message, param: e.param, type: e.type };
  }
  try {
    await sidecar.embeddings.create({ model: "no-such-model", input: "x" });
    fail("an unknown model was accepted");
  } catch (e) {
    if (!(e instanceof OpenAI.NotFoundError)) fail(`unknown model: ${e?.constructor?.name}, want NotFoundError`);
  }
  return results;
}

async function concurrent(n) {
  const calls = Array.from({ length: n }, (_, i) => sidecar.embeddings.create({ model, input: `concurrent caller ${i}` }));
  const got = await Promise.all(calls);
  return { answers: got.filter((r) => r.data.length === 1).length };
}

const out = mode === "concurrent" ? await concurrent(Number(nArg)) : await check();
console.log(JSON.stringify(out));
