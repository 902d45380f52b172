#!/usr/bin/env node
// Prompt-processing and decode speed of llama.cpp itself (prebuilt CPU binaries, node-llama-cpp 3.21.1).
//
//   node tools/llamacpp/bench.mjs --model F.gguf [--threads 2] [--prompt-tokens 512]
//        [--decode-tokens 64] [--repeats 3] [--ctx 1024] [--flash-attention auto|on|off]
//
// Prints one JSON line:
//   {"prompt_tok_s", "decode_tok_s", "threads", "llama_cpp", "cpu_backend", "model", ...}
// prompt_tok_s: a prompt of --prompt-tokens fixed ids (i % vocab, special tokens skipped) evaluated
//   from an empty KV cache in one batch (batch size >= prompt length), no sampling; best of repeats.
// decode_tok_s: after an 8-token prompt, --decode-tokens single-token greedy steps (evaluate one
//   token + greedy argmax on its logits); best of repeats.
// Timing covers evaluation only (model load and context creation excluded); one untimed warm-up
// run of each precedes the timed repeats.
import path from "node:path";
import {performance} from "node:perf_hooks";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

function parseArgs(argv) {
    const args = {threads: 2, promptTokens: 512, decodeTokens: 64, repeats: 3, ctx: 1024, flashAttention: "auto"};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = () => {
            if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
            return argv[++i];
        };
        if (a === "--model") args.model = v();
        else if (a === "--threads") args.threads = parseInt(v(), 10);
        else if (a === "--prompt-tokens") args.promptTokens = parseInt(v(), 10);
        else if (a === "--decode-tokens") args.decodeTokens = parseInt(v(), 10);
        else if (a === "--repeats") args.repeats = parseInt(v(), 10);
        else if (a === "--ctx") args.ctx = parseInt(v(), 10);
        else if (a === "--flash-attention") args.flashAttention = v();
        else if (a === "-h" || a === "--help") {
            console.error("usage: node bench.mjs --model F.gguf [--threads 2] [--prompt-tokens 512] [--decode-tokens 64] [--repeats 3] [--ctx 1024] [--flash-attention auto|on|off]");
            process.exit(0);
        } else throw new Error(`unknown argument ${a}`);
    }
    if (!args.model) throw new Error("--model is required");
    return args;
}

const flashOpt = (s) => (s === "on" || s === "true") ? true : (s === "off" || s === "false") ? false : "auto";
const args = parseArgs(process.argv.slice(2));

const logs = [];
const llama = await getLlama({
    gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
    logLevel: LlamaLogLevel.debug, maxThreads: args.threads,
    logger: (level, message) => {
        logs.push(message);
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) process.stderr.write(message + "\n");
    }
});
const model = await llama.loadModel({modelPath: path.resolve(args.model), gpuLayers: 0});
await new Promise((r) => setTimeout(r, 50));  // addon log lines arrive asynchronously
const cpuBackend = (logs.join("\n").match(/loaded CPU backend from \S*libggml-cpu-([A-Za-z0-9_]+)\.so/) || [])[1] ?? "unknown";

// Fixed prompt ids: i % vocab, skipping special/control tokens.
const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
if (!vocab) throw new Error("cannot read the vocabulary size from the GGUF metadata");
const ordinary = [];
for (let t = 0; t < vocab; t++) if (!model.isSpecialToken(t) && !model.isEogToken(t)) ordinary.push(t);
const promptIds = (n) => {
    const out = model.tokens.bos != null ? [model.tokens.bos] : [];
    for (let i = 0; out.length < n; i++) out.push(ordinary[i % ordinary.length]);
    return out;
};

const contextSize = Math.max(args.ctx, args.promptTokens + 8, 8 + args.decodeTokens + 8);
const context = await model.createContext({
    contextSize,
    batchSize: Math.max(512, args.promptTokens),   // the whole prompt is one batch
    sequences: 1,
    threads: args.threads,
    flashAttention: flashOpt(args.flashAttention)
});
const sequence = context.getSequence();

async function promptRun() {
    const ids = promptIds(args.promptTokens);
    await sequence.clearHistory();
    const t0 = performance.now();
    await sequence.evaluateWithoutGeneratingNewTokens(ids);
    const dt = (performance.now() - t0) / 1000;
    if (sequence.nextTokenIndex !== ids.length) throw new Error("prompt was not fully evaluated");
    return ids.length / dt;
}

async function decodeRun() {
    await sequence.clearHistory();
    const it = sequence.evaluate(promptIds(8), {temperature: 0, yieldEogToken: true});
    await it.next();                         // prompt processed, first token sampled (not timed)
    const t0 = performance.now();
    for (let i = 0; i < args.decodeTokens; i++) {
        const r = await it.next();           // evaluates the previous token alone, samples the next
        if (r.done) throw new Error("generation stopped early");
    }
    const dt = (performance.now() - t0) / 1000;
    await it.return();
    return args.decodeTokens / dt;
}

await promptRun();                          // warm-up
const promptRates = [];
for (let r = 0; r < args.repeats; r++) promptRates.push(await promptRun());
await decodeRun();                          // warm-up
const decodeRates = [];
for (let r = 0; r < args.repeats; r++) decodeRates.push(await decodeRun());

const round = (x) => Math.round(x * 100) / 100;
process.stdout.write(JSON.stringify({
    prompt_tok_s: round(Math.max(...promptRates)),
    decode_tok_s: round(Math.max(...decodeRates)),
    threads: args.threads,
    llama_cpp: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release} (node-llama-cpp ${(await import("node-llama-cpp/package.json", {with: {type: "json"}}).catch(() => ({default: {}}))).default.version ?? "3.21.1"}, ${llama.buildType})`,
    cpu_backend: cpuBackend,
    model: path.basename(args.model),
    prompt_tokens: args.promptTokens,
    decode_tokens: args.decodeTokens,
    repeats: args.repeats,
    flash_attention: context.flashAttention,
    prompt_tok_s_all: promptRates.map(round),
    decode_tok_s_all: decodeRates.map(round)
}) + "\n");

await context.dispose();
await model.dispose();
await llama.dispose();
