// The web page of `uneven serve`, kept as one raw string so that the binary needs no files beside it: a chat
// box streaming from /v1/chat/completions (fetch + SSE parsing) and a cluster view polling /v1/cluster.
#include "serve/web_page.h"

namespace uneven::serve {

const char* web_page_html() {
  return R"PAGE(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>uneven</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; display: flex; height: 100vh; color: #222; }
  main { flex: 3; display: flex; flex-direction: column; padding: 12px; min-width: 0; }
  aside { flex: 2; border-left: 1px solid #ddd; padding: 12px; overflow: auto; background: #fafafa; }
  #log { flex: 1; overflow: auto; border: 1px solid #ddd; border-radius: 6px; padding: 8px; background: #fff; }
  .msg { white-space: pre-wrap; margin: 6px 0; padding: 6px 8px; border-radius: 6px; }
  .user { background: #e8f0fe; } .assistant { background: #f1f1f1; } .error { background: #fde8e8; color: #900; }
  form { display: flex; gap: 6px; margin-top: 8px; } textarea { flex: 1; height: 3.2em; font: inherit; }
  .opts { display: flex; gap: 10px; font-size: 13px; margin-top: 6px; flex-wrap: wrap; } .opts input { width: 5em; }
  .rank { margin: 10px 0; padding: 8px; background: #fff; border: 1px solid #ddd; border-radius: 6px; }
  .bar { height: 12px; background: #eee; border-radius: 6px; overflow: hidden; margin: 4px 0; }
  .bar > div { height: 100%; background: #4a7bd0; }
  .small { font-size: 12px; color: #666; } h2 { font-size: 16px; margin: 4px 0 8px; }
</style></head>
<body>
<main>
  <h2>Chat with <span id="model">the model</span></h2>
  <div id="log"></div>
  <form id="form">
    <textarea id="input" placeholder="Type a message; Enter sends, Shift+Enter for a new line"></textarea>
    <button id="send">Send</button>
  </form>
  <div class="opts">
    <label>mode <select id="mode"><option value="chat">chat</option><option value="completion">completion</option></select></label>
    <label>max tokens <input id="max_tokens" type="number" value="256" min="1"></label>
    <label>temperature <input id="temperature" type="number" value="0.7" step="0.1" min="0" max="2"></label>
    <label>API key <input id="key" type="password" style="width:9em"></label>
    <button id="clear" type="button">Clear</button>
  </div>
</main>
<aside>
  <h2>Cluster</h2>
  <div id="summary" class="small">loading...</div>
  <div id="ranks"></div>
</aside>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const conversation = [];  // the conversation sent with every chat request
$("key").value = localStorage.getItem("uneven_key") || "";
$("key").onchange = () => localStorage.setItem("uneven_key", $("key").value);
function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}
function add(cls, text) {
  const d = document.createElement("div");
  d.className = "msg " + cls; d.textContent = text;
  $("log").appendChild(d); $("log").scrollTop = $("log").scrollHeight;
  return d;
}
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
// Reads an SSE body: calls onData with each `data:` payload (events are separated by a blank line).
async function readEvents(response, onData) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
      for (const line of event.split("\n"))
        if (line.startsWith("data: ")) onData(line.slice(6));
    }
  }
}
async function send(text) {
  const chat = $("mode").value === "chat";
  add("user", text);
  const out = add("assistant", "");
  const body = { stream: true, max_tokens: Number($("max_tokens").value), temperature: Number($("temperature").value) };
  if (chat) { conversation.push({ role: "user", content: text }); body.messages = conversation; } else body.prompt = text;
  $("send").disabled = true;
  let answer = "";
  try {
    const r = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error("HTTP " + r.status + ": " + ((e.error && e.error.message) || r.statusText));
    }
    await readEvents(r, (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const c = chunk.choices && chunk.choices[0];
      if (!c) return;
      answer += chat ? (c.delta.content || "") : (c.text || "");
      out.textContent = answer;
      $("log").scrollTop = $("log").scrollHeight;
    });
    if (chat) conversation.push({ role: "assistant", content: answer });
  } catch (e) {
    out.className = "msg error"; out.textContent = answer + "\n[" + e.message + "]";
    if (chat) conversation.pop();
  } finally { $("send").disabled = false; }
}
$("form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text) return;
  $("input").value = ""; send(text);
};
$("input").onkeydown = (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); } };
$("clear").onclick = () => { conversation.length = 0; $("log").textContent = ""; };

async function poll() {
  try {
    const r = await fetch("/v1/cluster", { headers: headers() });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const c = await r.json(), live = c.live || {};
    $("model").textContent = c.model;
    $("summary").textContent = `${c.world_size} rank(s), ${c.mode} split, context ${c.context}, batch ${live.active}/${c.max_batch}` +
      `, queued ${live.queued}, ${live.decode_tokens_per_second.toFixed(1)} tok/s, ${live.completed} done`;
    const box = $("ranks"); box.textContent = "";
    for (const k of c.ranks || []) {
      const d = document.createElement("div"); d.className = "rank";
      const share = (100 * k.weight_share).toFixed(1);
      d.innerHTML = `<b>rank ${k.rank}</b> <span class="small">${k.host} (${k.device})</span>
        <div class="bar" title="share of the weights"><div style="width:${share}%"></div></div>
        <div class="small">weights ${share}%: ${bytes(k.weight_bytes)} (planned ${bytes(k.planned_bytes)}, resident ${bytes(k.resident_weight_bytes)})
        <br>KV cache + state ${bytes(k.kv_cache_bytes)}; process resident ${bytes(k.resident_bytes)} at start
        <br>computes every step: ${live.decode_tokens_per_second.toFixed(1)} tok/s</div>`;
      box.appendChild(d);
    }
  } catch (e) { $("summary").textContent = "cluster info unavailable: " + e.message; }
}
poll(); setInterval(poll, 2000);
</script>
</body></html>
)PAGE";
}

}  // namespace uneven::serve
