// The official OpenAI Node SDK against Loom's /v1/responses. Prints one
// JSON summary for tests/e2e/test_node_sdks.py to check.
import OpenAI from "openai";

const [base, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "client-key", maxRetries: 0 });
const weather = {
  type: "function",
  name: "get_weather",
  description: "Current weather in a city",
  parameters: {
    type: "object",
    properties: { location: { type: "string" } },
    required: ["location"],
    additionalProperties: false,
  },
  strict: true,
};

const whole = await client.responses.create({ model, input: "Hello", instructions: "Be brief." });
const events = [];
const stream = await client.responses.create({ model, input: "Hello", stream: true });
for await (const e of stream) events.push({ type: e.type, seq: e.sequence_number, delta: e.delta });
const helper = client.responses.stream({ model, input: "Weather in Paris?", tools: [weather] });
const argDeltas = [];
helper.on("response.function_call_arguments.delta", (e) => argDeltas.push(e.delta));
const final = await helper.finalResponse();
const call = final.output.find((i) => i.type === "function_call");
// Kept: read back, its input listed, continued.
const got = await client.responses.retrieve(whole.id);
const inputs = await client.responses.inputItems.list(whole.id);
const next = await client.responses.create({ model, input: "And again?", previous_response_id: whole.id });
let refused = null;
try {
  await client.responses.create({ model, input: "hi", previous_response_id: "resp_x" });
} catch (e) {
  refused = { status: e.status, message: e.message };
}
console.log(
  JSON.stringify({
    whole: { text: whole.output_text, status: whole.status, usage: whole.usage },
    events: events.map(({ type, seq }) => ({ type, seq })),
    streamedText: events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""),
    call: call && { name: call.name, arguments: call.arguments, call_id: call.call_id },
    argDeltas: argDeltas.join(""),
    retrieved: { id: got.id, text: got.output_text, wholeId: whole.id },
    inputTypes: inputs.data.map((i) => i.type),
    continued: next.status,
    refused,
  }),
);
