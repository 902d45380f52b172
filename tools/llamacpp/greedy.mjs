#!/usr/bin/env node
// Greedy decoding with llama.cpp itself (prebuilt CPU binaries shipped by node-llama-cpp 3.21.1).
//
//   node tools/llamacpp/greedy.mjs --model F.gguf --prompts P.jsonl [--n 32] [--threads 2]
//        [--ctx 1024] [--flash-attention auto|on|off]
//
// Each input line of P.jsonl is a JSON object with `prompt_ids` (token ids, BOS already included).
// For each line one JSON line is printed to stdout:
//   {"prompt_ids": [...], "greedy_ids": [...n ids], "margins": [...n floats]}
// greedy_ids: argmax of llama.cpp's raw logits at each step (llama.cpp's greedy sampler, no
// penalties/top-k/top-p, EOS/EOG not a stop). margins[i] = top1 logit - top2 logit at step i.
//
// How: the prompt ids go straight to LlamaContextSequence.evaluateWithMetadata (token ids, so no
// tokenization, no chat template, no extra BOS). With temperature 0 the sampler chain is
// llama_sampler_init_greedy() alone, and `probabilities: true` returns softmax(raw logits) over the
// whole vocabulary (computed in the addon from llama_get_logits_ith). Softmax keeps logit
// differences, so top1 - top2 = ln(p1) - ln(p2). The sequence is cleared between prompts.
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

function parseArgs(argv) {
    const args = {n: 32, threads: 2, ctx: 1024, flashAttention: "auto"};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = () => {
            if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
            return argv[++i];
        };
        if (a === "--model") args.model = v();
        else if (a === "--prompts") args.prompts = v();
        else if (a === "--n") args.n = parseInt(v(), 10);
        else if (a === "--threads") args.threads = parseInt(v(), 10);
        else if (a === "--ctx") args.ctx = parseInt(v(), 10);
        else if (a === "--flash-attention") args.flashAttention = v();
        else if (a === "--logprobs") args.logprobs = true;
        else if (a === "-h" || a === "--help") {
            console.error("usage: node greedy.mjs --model F.gguf --prompts P.jsonl [--n 32] [--threads 2] [--ctx 1024] [--flash-attention auto|on|off] [--logprobs]");
            process.exit(0);
        } else throw new Error(`unknown argument ${a}`);
    }
    if (!args.model || !args.prompts) throw new Error("--model and --prompts are required");
    return args;
}

function flashOpt(s) {
    if (s === "on" || s === "true") return true;
    if (s === "off" || s === "false") return false;
    return "auto";
}

const args = parseArgs(process.argv.slice(2));

// CPU only; never build or download llama.cpp.
const logs = [];
const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true,
    progressLogs: false, logLevel: LlamaLogLevel.debug, maxThreads: args.threads,
    logger: (level, message) => {
        logs.push(message);
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) process.stderr.write(message + "\n");
    }
});
const model = await llama.loadModel({modelPath: path.resolve(args.model), gpuLayers: 0});
await new Promise((r) => setTimeout(r, 50));  // addon log lines arrive asynchronously
const cpuBackend = (logs.join("\n").match(/loaded CPU backend from \S*libggml-cpu-([A-Za-z0-9_]+)\.so/) || [])[1] ?? "unknown";
process.stderr.write(`greedy.mjs: llama.cpp ${llama.llamaCppRelease.release} (${llama.buildType}), CPU backend ${cpuBackend}, threads ${args.threads}\n`);

// Read all prompts first so the context can be sized for the longest one.
const prompts = [];
const rl = readline.createInterface({input: fs.createReadStream(args.prompts), crlfDelay: Infinity});
for await (const line of rl) {
    if (line.trim() === "") continue;
    const obj = JSON.parse(line);
    if (!Array.isArray(obj.prompt_ids) || obj.prompt_ids.length === 0)
        throw new Error("each line needs a non-empty prompt_ids array");
    prompts.push(obj.prompt_ids.map((x) => Number(x)));
}
const longest = prompts.reduce((m, p) => Math.max(m, p.length), 0);
const contextSize = Math.max(args.ctx, longest + args.n + 8);

const context = await model.createContext({
    contextSize,
    batchSize: Math.max(512, longest),   // whole prompt in one batch, like llama.cpp's default n_batch
    sequences: 1,
    threads: args.threads,
    flashAttention: flashOpt(args.flashAttention)
});
const sequence = context.getSequence();

for (const promptIds of prompts) {
    await sequence.clearHistory();                 // reset KV state between prompts
    const greedy = [];
    const margins = [];
    const logprobs = [];
    if (args.n > 0) {
        const it = sequence.evaluateWithMetadata(promptIds, {probabilities: true}, {
            temperature: 0,                        // -> llama_sampler_init_greedy only
            yieldEogToken: true                    // EOS is not a stop
        });
        for await (const out of it) {
            // probabilities: Map sorted from highest to lowest
            let p1 = 0, p2 = 0, top = -1, k = 0;
            for (const [tok, p] of out.probabilities) {
                if (k === 0) { top = tok; p1 = p; }
                else if (k === 1) { p2 = p; break; }
                k++;
            }
            // ties between the top two: the greedy sampler keeps the lower id; the map may list either
            if (top !== out.token && !(p1 === (out.probabilities.get(out.token) ?? -1)))
                throw new Error(`sampled token ${out.token} is not the argmax ${top}`);
            if (args.logprobs) {
                const row = new Array(512).fill(null);
                for (const [tok, p] of out.probabilities) row[tok] = p > 0 ? Math.log(p) : null;
                logprobs.push(row);
            }
            greedy.push(out.token);
            margins.push(p2 > 0 ? Math.log(p1) - Math.log(p2) : null);  // null: p2 underflowed (margin > ~87)
            if (greedy.length >= args.n) break;    // closes the generator (no further eval)
        }
    }
    process.stdout.write(JSON.stringify({
        prompt_ids: promptIds,
        greedy_ids: greedy,
        margins: margins.map((m) => (m == null ? null : Math.round(m * 1e6) / 1e6)),
        ...(args.logprobs ? {logprobs} : {})
    }) + "\n");
}

await context.dispose();
await model.dispose();
await llama.dispose();
