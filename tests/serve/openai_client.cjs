// Talks to `uneven serve` through the official `openai` npm client and prints one JSON line of what it got
// (tests/serve_test.cpp compares it with raw HTTP answers). Usage: node openai_client.cjs BASE_URL MODEL [chat]
// with UNEVEN_NODE_MODULES naming the node_modules directory that holds `openai` (scripts/setup_node_clients.sh).
"use strict";
const path = require("path");
const mod = require(path.resolve(process.env.UNEVEN_NODE_MODULES || "node_modules", "openai"));
const OpenAI = mod.OpenAI || mod.default || mod;

async function main() {
  const [baseURL, model, mode] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: process.env.UNEVEN_API_KEY || "none", timeout: 60000, maxRetries: 0 });
  const out = {};
  const prompt = "Once upon a time";
  const c = await client.completions.create({ model, prompt, max_tokens: 20, temperature: 0 });
  out.completion = { text: c.choices[0].text, finish_reason: c.choices[0].finish_reason, usage: c.usage, object: c.object };

  let text = "", usage = null, chunks = 0;
  const s = await client.completions.create({ model, prompt, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
  for await (const chunk of s) {
    chunks++;
    if (chunk.choices.length) text += chunk.choices[0].text;
    if (chunk.usage) usage = chunk.usage;
  }
  out.completion_stream = { text, usage, chunks };

  const st = await client.completions.create({ model, prompt, max_tokens: 40, temperature: 0, stop: [" named"] });
  out.stop = { text: st.choices[0].text, finish_reason: st.choices[0].finish_reason };

  try {
    await client.completions.create({ model: "no-such-model", prompt, max_tokens: 2 });
    out.wrong_model = { status: 200 };
  } catch (e) {
    out.wrong_model = { status: e.status, code: e.code };
  }

  if (mode === "chat") {
    const messages = [{ role: "user", content: "Hello there" }];
    const r = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 2 });
    const m = r.choices[0];
    out.chat = { content: m.message.content, role: m.message.role, finish_reason: m.finish_reason, usage: r.usage,
                 logprobs: m.logprobs.content.length, top: m.logprobs.content[0].top_logprobs.length };
    let content = "", role = null, finish = null, u = null;
    const cs = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    for await (const chunk of cs) {
      if (chunk.usage) u = chunk.usage;
      if (!chunk.choices.length) continue;
      const d = chunk.choices[0].delta;
      if (d.role) role = d.role;
      if (d.content) content += d.content;
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    out.chat_stream = { content, role, finish_reason: finish, usage: u };
  }
  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);
  console.log(JSON.stringify(out));
}
main().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(1); });
