// Drives the web page of a running `uneven serve` in headless Chromium: a chat question streams an answer that
// grows in the page and equals the API's greedy answer; the cluster view shows every rank with its host and
// weight-share bar; a screenshot is written. Prints one JSON line of what it saw; exits 1 on any failure.
// Usage: node page_test.cjs BASE_URL SCREENSHOT.png RANKS "QUESTION" MAX_TOKENS
// with UNEVEN_NODE_MODULES naming the node_modules that holds playwright-core (scripts/setup_browser.sh) and
// UNEVEN_CHROMIUM the browser (default /usr/bin/chromium).
"use strict";
const path = require("path");
const { chromium } = require(path.resolve(process.env.UNEVEN_NODE_MODULES || "node_modules", "playwright-core"));

const [base, screenshot, ranksArg, question, maxTokensArg] = process.argv.slice(2);
const ranks = Number(ranksArg), maxTokens = Number(maxTokensArg);
const out = { steps: [] };
function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
  out.steps.push(what);
}

// The whole run is bounded: a wedged browser or server must fail the test, not hang it.
const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ...out, error: "page_test timed out after 150 s" }));
  process.exit(1);
}, 150000);

async function main() {
  const browser = await chromium.launch({ executablePath: process.env.UNEVEN_CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"], headless: true, timeout: 60000 });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
    page.setDefaultTimeout(30000);
    const consoleErrors = [];
    // The browser's own request for /favicon.ico gets a 404 (the server has none); anything else is the page's.
    page.on("console", (m) => { if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    const sent = [];  // the bodies the page posts to the chat endpoint
    page.on("request", (r) => { if (r.url().endsWith("/v1/chat/completions")) sent.push(r.postDataJSON()); });

    await page.goto(base + "/");
    // Cluster view: one box per rank, each with its host and a bar as wide as its share of the weights.
    const cluster = await (await fetch(base + "/v1/cluster")).json();
    check(cluster.ranks.length === ranks, `the API lists ${ranks} ranks`);
    await page.waitForFunction((n) => document.querySelectorAll("#ranks .rank").length === n, ranks);
    const boxes = await page.$$eval("#ranks .rank", (els) => els.map((e) => ({ text: e.textContent, bar: e.querySelector(".bar > div").style.width })));
    out.ranks = boxes.map((b, i) => ({ bar: b.bar, host: cluster.ranks[i].host, share: cluster.ranks[i].weight_share }));
    for (let i = 0; i < ranks; ++i) {
      const k = cluster.ranks[i];
      check(boxes[i].text.includes(`rank ${k.rank}`) && boxes[i].text.includes(k.host), `rank ${i} shows its number and host ${k.host}`);
      // The browser normalises the style ("75.0%" reads back as "75%"): compare the number.
      check(boxes[i].bar.endsWith("%") && Math.abs(parseFloat(boxes[i].bar) - 100 * k.weight_share) < 0.051,
            `rank ${i} bar is ${boxes[i].bar} wide, its weight share`);
    }
    check((await page.textContent("#summary")).startsWith(`${ranks} rank(s)`), "the summary counts the ranks");

    // Chat: greedy, so that the page's answer can be compared with the API's.
    await page.fill("#temperature", "0");
    await page.fill("#max_tokens", String(maxTokens));
    // Every state the answer's text passes through: the page replaces the text node on each streamed piece,
    // and the mutation records keep each new node, however the callbacks are batched.
    await page.evaluate(() => {
      window.__lengths = [];
      new MutationObserver((records) => {
        for (const r of records)
          for (const n of r.addedNodes)
            if (r.target.classList && r.target.classList.contains("assistant") && n.nodeType === Node.TEXT_NODE) window.__lengths.push(n.data.length);
      }).observe(document.getElementById("log"), { childList: true, subtree: true });
    });
    await page.click("#input");
    await page.keyboard.type(question);
    await page.keyboard.press("Enter");  // Enter sends (Shift+Enter would add a line)
    await page.waitForFunction(() => { const a = document.querySelector(".msg.assistant"); return a && a.textContent.length > 0; });
    await page.waitForFunction(() => !document.getElementById("send").disabled, null, { timeout: 90000 });
    const answer = await page.textContent("#log .msg:last-child");
    const lengths = await page.evaluate(() => window.__lengths);
    out.answer = answer;
    out.lengths = lengths;
    check(await page.$("#log .msg.error") === null, "no error message in the page: " + answer);
    check((await page.textContent("#log .msg.user")) === question, "the question is shown");
    const grew = lengths.filter((n) => n > 0);
    check(grew.length >= 2 && grew.every((n, i) => i === 0 || n >= grew[i - 1]) && grew[grew.length - 1] > grew[0],
          `the answer appeared and grew while streaming (${grew.length} states)`);
    check(sent.length === 1 && sent[0].temperature === 0 && sent[0].stream === true && sent[0].max_tokens === maxTokens,
          "the page sent one streaming request at temperature 0");
    out.request = sent[0];

    // The same request, not streamed: the greedy answer must be the page's, character for character.
    const r = await fetch(base + "/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages: sent[0].messages, max_tokens: maxTokens, temperature: 0 }),
    });
    const api = await r.json();
    out.api = api.choices && api.choices[0].message.content;
    check(r.status === 200 && out.api === answer, "the page's answer equals the API's greedy answer");

    // A poll after the answer shows it in the live figures; then the picture.
    await page.waitForFunction(() => / [1-9]\d* done/.test(document.getElementById("summary").textContent), null, { timeout: 10000 });
    await page.screenshot({ path: screenshot });
    check(consoleErrors.length === 0, "no errors in the browser console: " + consoleErrors.join("; "));
    out.screenshot = screenshot;
  } finally {
    await browser.close();
  }
}

main().then(
  () => { clearTimeout(watchdog); out.ok = true; console.log(JSON.stringify(out)); },
  (e) => { clearTimeout(watchdog); console.log(JSON.stringify({ ...out, error: String((e && e.stack) || e) })); process.exit(1); });
