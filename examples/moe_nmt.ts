/**
 * The main job: trains GShard's MoE Transformer (pre-norm encoder-decoder, every other FFN an MoE
 * layer with top-2 gating) on a synthetic many-to-English corpus, sharded over the core actors of
 * a simulated TPU v3-8 (sentences split over the cores, experts split over the cores, replicated
 * weights' gradients all-reduced, the optimizer applied on every core to its tiles). Then decodes
 * a held-out test set per language greedily on the host and reports corpus BLEU per language,
 * the simulated step time by op class, per-core peak memory, expert load and overflow per MoE
 * layer, and the messages and bytes moved.
 *
 *   deno run examples/moe_nmt.ts [--steps N] [--experts E] [--slice NAME | --mesh XxY]
 *     [--layers L] [--d-model M] [--seed N] [--dense] [--optimizer adam|adafactor] [--lr X]
 *     [--batch B] [--source-length N] [--test-sentences N] [--every N] [--json]
 *     [--trace [PATH]] [--help]
 *
 * Defaults: 300 steps of 16 sentences, d_model 64, H 128, 2 + 2 layers, 8 experts, Adafactor
 * (constant rate 0.03 times the parameter's RMS, momentum 0.9). About 75 s on a 2-core machine.
 *
 * No permissions are needed, except `--trace PATH` (writes a file: `--allow-write`).
 * Exits 0 on success, 1 when a run fails (out of memory, deadlock), 2 on bad input.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  adafactor,
  adam,
  evaluate,
  Graph,
  meshTopology,
  type MoeStatistics,
  type Node,
  type Optimizer,
  partition,
  PodsimError,
  RoutingRecorder,
  type RunResult,
  sliceTopology,
  toChromeTraceJson,
  type Topology,
} from "../mod.ts";
import {
  batchLengths,
  buildCorpus,
  type Corpus,
  encodeBatch,
  type EncodedBatch,
  type SentencePair,
  Vocabulary,
} from "../src/data/corpus.ts";
import { corpusBleu } from "../src/data/bleu.ts";
import type { GroupRoute } from "../src/moe/gate.ts";
import type { GateObserver } from "../src/moe/gate_ops.ts";
import { stepBreakdown } from "../src/moe/step_breakdown.ts";
import { buildTransformer } from "../src/moe/transformer.ts";
import { number, oneOf, UsageError } from "./_cli.ts";

/** Everything a run is configured by. */
export interface NmtConfig {
  /** Training steps. */
  readonly steps: number;
  /** Experts per MoE layer (ignored with `dense`). */
  readonly experts: number;
  /** The topology's name ("v3-8" or "4x2 mesh"), and how to build it. */
  readonly topology: { readonly slice: string } | { readonly mesh: readonly [number, number] };
  /** Encoder and decoder layers each (every second one is MoE). */
  readonly layers: number;
  /** Model width. */
  readonly dModel: number;
  /** Attention heads. */
  readonly heads: number;
  /** FFN / expert hidden width H (the dense baseline uses 2H, see `dense`). */
  readonly hidden: number;
  /** Sentences per step (split over the cores). */
  readonly batch: number;
  /** Source and target positions. */
  readonly sourceLength: number;
  readonly targetLength: number;
  /** Seed of the corpus sentences, the weights and the gate. */
  readonly seed: number;
  /** Dense FFNs (hidden 2H everywhere) instead of MoE layers. */
  readonly dense: boolean;
  /** The optimizer and its (peak) learning rate. */
  readonly optimizer: "adam" | "adafactor";
  readonly learningRate: number;
  /** Held-out sentences decoded per language. */
  readonly testSentences: number;
  /** Training sentences of the highest-resource language. */
  readonly trainSentences: number;
  /** A progress line every `every` steps (0: none). */
  readonly every: number;
}

/**
 * Adafactor's default constant learning rate (with the parameter scale and momentum 0.9): a
 * step of about 0.03 times the parameter's RMS.
 */
export const ADAFACTOR_LEARNING_RATE = 0.03;
/** Adam's default constant learning rate. */
export const ADAM_LEARNING_RATE = 3e-3;

/** The defaults: the run `deno run examples/moe_nmt.ts` makes. */
export const DEFAULT_CONFIG: NmtConfig = {
  steps: 300,
  experts: 8,
  topology: { slice: "v3-8" },
  layers: 2,
  dModel: 64,
  heads: 4,
  hidden: 128,
  batch: 16,
  sourceLength: 20,
  targetLength: 13,
  seed: 1,
  dense: false,
  optimizer: "adafactor",
  learningRate: ADAFACTOR_LEARNING_RATE,
  testSentences: 32,
  trainSentences: 2000,
  every: 20,
};

const HELP = `Trains GShard's MoE Transformer to translate 6 synthetic languages into English on a
simulated TPU v3-8, then reports BLEU, step time by op class, memory, expert load and traffic.

usage: deno run examples/moe_nmt.ts [flags]

  --steps N            training steps (default ${DEFAULT_CONFIG.steps})
  --experts E          experts per MoE layer, a multiple of the cores (default ${DEFAULT_CONFIG.experts})
  --slice NAME         a TPU v3 slice: v3-8, v3-32, ... (default v3-8)
  --mesh XxY           an X by Y mesh of chips (2 cores each) instead of a slice
  --layers L           encoder and decoder layers each; every second FFN is MoE (default ${DEFAULT_CONFIG.layers})
  --d-model M          model width (default ${DEFAULT_CONFIG.dModel}; the FFN hidden width is 2M)
  --batch B            sentences per step, a multiple of the cores (default ${DEFAULT_CONFIG.batch})
  --source-length N    source positions incl. language tag and EOS; longer pairs are left out
                       (default ${DEFAULT_CONFIG.sourceLength})
  --seed N             seed of the sentences, the weights and the gate (default ${DEFAULT_CONFIG.seed})
  --dense              dense FFNs of hidden 2H instead of MoE layers (top-2 routing's per-token
                       compute), for comparison
  --optimizer NAME     adam or adafactor (default ${DEFAULT_CONFIG.optimizer})
  --lr X               learning rate, constant (default ${ADAM_LEARNING_RATE} for adam, ${ADAFACTOR_LEARNING_RATE} for adafactor)
  --test-sentences N   held-out sentences decoded per language (default ${DEFAULT_CONFIG.testSentences})
  --every N            a progress line every N steps, 0 for none (default ${DEFAULT_CONFIG.every})
  --json               print the final report as one JSON object
  --trace [PATH]       Chrome trace JSON of the last step to stdout, or to PATH (--allow-write)
  --help               this text

Exit codes: 0 success, 1 a failed run (out of memory, deadlock), 2 bad input.`;

/** Parsed command line. */
export interface ParsedArgs {
  readonly config: NmtConfig;
  readonly json: boolean;
  /** undefined: no trace; "-": stdout; else a file path. */
  readonly trace?: string;
  readonly help: boolean;
}

/** Parses the flags (throws UsageError on bad input). */
export function parseNmtArgs(args: readonly string[]): ParsedArgs {
  // `--trace` takes an optional path: give parseArgs an explicit "-" when it has none.
  const argv: string[] = [];
  for (let i = 0; i < args.length; i++) {
    argv.push(args[i]);
    if (args[i] === "--trace" && (i + 1 >= args.length || args[i + 1].startsWith("--"))) {
      argv.push("-");
    }
  }
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      steps: { type: "string" },
      experts: { type: "string" },
      slice: { type: "string" },
      mesh: { type: "string" },
      layers: { type: "string" },
      "d-model": { type: "string" },
      "source-length": { type: "string" },
      batch: { type: "string" },
      seed: { type: "string" },
      dense: { type: "boolean" },
      optimizer: { type: "string" },
      lr: { type: "string" },
      "test-sentences": { type: "string" },
      every: { type: "string" },
      json: { type: "boolean" },
      trace: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (values.slice !== undefined && values.mesh !== undefined) {
    throw new UsageError("give --slice or --mesh, not both");
  }
  let topology: NmtConfig["topology"] = DEFAULT_CONFIG.topology;
  if (values.slice !== undefined) topology = { slice: values.slice };
  if (values.mesh !== undefined) {
    const m = /^(\d+)x(\d+)$/.exec(values.mesh);
    if (!m || Number(m[1]) < 1 || Number(m[2]) < 1 || Number(m[1]) * Number(m[2]) > 1024) {
      throw new UsageError(`--mesh must be XxY chips (e.g. 2x2); got "${values.mesh}"`);
    }
    topology = { mesh: [Number(m[1]), Number(m[2])] };
  }
  const optimizer = values.optimizer === undefined
    ? DEFAULT_CONFIG.optimizer
    : oneOf("--optimizer", values.optimizer, ["adam", "adafactor"] as const);
  const dModel = number("--d-model", values["d-model"], {
    fallback: DEFAULT_CONFIG.dModel,
    min: 4,
    max: 1024,
    integer: true,
  });
  if (dModel % DEFAULT_CONFIG.heads !== 0) {
    throw new UsageError(`--d-model must be a multiple of ${DEFAULT_CONFIG.heads} (the heads)`);
  }
  const config: NmtConfig = {
    ...DEFAULT_CONFIG,
    steps: number("--steps", values.steps, {
      fallback: DEFAULT_CONFIG.steps,
      min: 1,
      max: 1e6,
      integer: true,
    }),
    experts: number("--experts", values.experts, {
      fallback: DEFAULT_CONFIG.experts,
      min: 1,
      max: 4096,
      integer: true,
    }),
    topology,
    layers: number("--layers", values.layers, {
      fallback: DEFAULT_CONFIG.layers,
      min: 1,
      max: 64,
      integer: true,
    }),
    dModel,
    hidden: 2 * dModel,
    batch: number("--batch", values.batch, {
      fallback: DEFAULT_CONFIG.batch,
      min: 1,
      max: 4096,
      integer: true,
    }),
    sourceLength: number("--source-length", values["source-length"], {
      fallback: DEFAULT_CONFIG.sourceLength,
      min: 4,
      max: 64,
      integer: true,
    }),
    seed: number("--seed", values.seed, { fallback: DEFAULT_CONFIG.seed, min: 0, integer: true }),
    dense: values.dense ?? false,
    optimizer,
    learningRate: number("--lr", values.lr, {
      fallback: optimizer === "adam" ? ADAM_LEARNING_RATE : ADAFACTOR_LEARNING_RATE,
      min: 0,
      max: 10,
      exclusive: true,
    }),
    testSentences: number("--test-sentences", values["test-sentences"], {
      fallback: DEFAULT_CONFIG.testSentences,
      min: 1,
      max: 100,
      integer: true,
    }),
    every: number("--every", values.every, {
      fallback: DEFAULT_CONFIG.every,
      min: 0,
      integer: true,
    }),
  };
  return {
    config,
    json: values.json ?? false,
    trace: values.trace,
    help: values.help ?? false,
  };
}

/** The topology a config names (throws TopologyError for an unknown slice). */
export function topologyOf(config: NmtConfig): Topology {
  return "slice" in config.topology
    ? sliceTopology(config.topology.slice)
    : meshTopology(config.topology.mesh[0], config.topology.mesh[1]);
}

// ---------------------------------------------------------------------------------------------
// Routing statistics per MoE layer.

/**
 * One RoutingRecorder per MoE layer behind the transformer's single observer: within a step,
 * every group (sentence) is routed once per MoE layer, in layer order (a group lives on one
 * core, which runs the layers in graph order), so the n-th record of a group in a step belongs
 * to the n-th MoE layer.
 */
export class LayerRecorder implements GateObserver {
  /** One recorder per MoE layer, in graph order (encoder layers, then decoder layers). */
  readonly layers: RoutingRecorder[];
  readonly #seen = new Map<number, number>();

  constructor(moeLayers: number) {
    this.layers = Array.from({ length: moeLayers }, () => new RoutingRecorder());
  }

  record(group: number, route: GroupRoute): void {
    const n = this.#seen.get(group) ?? 0;
    this.#seen.set(group, n + 1);
    this.layers[n % this.layers.length]?.record(group, route);
  }

  /** Starts a step. */
  clear(): void {
    this.#seen.clear();
    for (const r of this.layers) r.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// The model and the data.

/** Additive attention masks (0 / -1e9) of an encoded batch. */
export function attentionMasks(
  enc: EncodedBatch,
  Ls: number,
  Lt: number,
): { encoder_mask: Float32Array; decoder_mask: Float32Array; cross_mask: Float32Array } {
  const B = enc.batch;
  const e = new Float32Array(B * Ls * Ls);
  const d = new Float32Array(B * Lt * Lt);
  const c = new Float32Array(B * Lt * Ls);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < Ls; j++) {
      if (enc.sourceMask[b * Ls + j]) continue;
      for (let i = 0; i < Ls; i++) e[(b * Ls + i) * Ls + j] = -1e9;
      for (let i = 0; i < Lt; i++) c[(b * Lt + i) * Ls + j] = -1e9;
    }
    for (let i = 0; i < Lt; i++) {
      for (let j = i + 1; j < Lt; j++) d[(b * Lt + i) * Lt + j] = -1e9;
    }
  }
  return { encoder_mask: e, decoder_mask: d, cross_mask: c };
}

/** The transformer's config for a run (`cores` undefined: the single-host decoding graph). */
function modelConfig(
  config: NmtConfig,
  corpus: { source: number; target: number },
  cores: number | undefined,
  batch: number,
  observer?: GateObserver,
) {
  return {
    batch,
    sourceLength: config.sourceLength,
    targetLength: config.targetLength,
    sourceVocabulary: corpus.source,
    targetVocabulary: corpus.target,
    dModel: config.dModel,
    heads: config.heads,
    // Dense baseline: hidden 2H in every FFN (>= top-2 routing's per-token compute of 2H in the
    // MoE layers; the transformer has one hidden width for all FFNs).
    hidden: config.hidden,
    denseHidden: 2 * config.hidden, // only in the MoE layers' places: equal per-token compute
    layers: config.layers,
    experts: config.dense ? 0 : config.experts,
    cores,
    observer,
  };
}

/** Deterministic initial weights (uniform, fan-in scaled; norms 1). */
export function initParams(params: readonly Node[], dModel: number, seed: number) {
  let s = (seed * 2654435761 + 7) >>> 0;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const out: Record<string, Float32Array> = {};
  for (const p of params) {
    const a = new Float32Array(p.size);
    const fan = p.shape.length >= 2 ? p.shape[p.shape.length - 2] : 1;
    const scale = p.name.includes("embedding")
      ? 1 / Math.sqrt(dModel)
      : p.name.includes("positions")
      ? 0.02
      : 1 / Math.sqrt(fan);
    if (p.name.includes("norm")) a.fill(1);
    else for (let i = 0; i < a.length; i++) a[i] = (rnd() * 2 - 1) * scale * Math.sqrt(3);
    out[p.name] = a;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The run.

/** The final report (also the `--json` object). */
export interface NmtReport {
  readonly config: NmtConfig & { readonly topologyName: string; readonly cores: number };
  readonly model: "moe" | "dense";
  readonly parameters: number;
  readonly steps: number;
  readonly wallSeconds: number;
  readonly trainSeconds: number;
  readonly decodeSeconds: number;
  readonly losses: { readonly first: number; readonly last: number };
  readonly lossCurve: readonly { step: number; loss: number; nll: number; aux: number }[];
  readonly bleu: number;
  readonly bleuPerLanguage: Record<string, number>;
  readonly trainSizes: Record<string, number>;
  /** Training pairs that fit the positions, of all. */
  readonly trainPairs: { readonly used: number; readonly total: number };
  /** Test sentences decoded per language. */
  readonly testPerLanguage: Record<string, number>;
  readonly examples: readonly {
    language: string;
    source: string;
    reference: string;
    output: string;
  }[];
  readonly simulatedStepSeconds: number;
  readonly stepBreakdownSeconds: Record<string, number>;
  readonly peakMemoryBytesPerCore: number;
  readonly peakMemoryByCategory: Record<string, number>;
  readonly budgetBytesPerCore: number;
  /** Percent of routing choices (over both choices and all MoE layers) that found no slot. */
  readonly overflowRate: number;
  readonly moeLayers: readonly {
    readonly layer: string;
    readonly capacity: number;
    readonly overflowPercent: readonly number[];
    readonly droppedTokens: number;
    readonly loadPerExpert: readonly number[];
    readonly loadCV: number;
    readonly loadMaxOverMean: number;
    readonly auxLoss: number;
  }[];
  readonly messages: number;
  readonly bytes: number;
}

/** Progress callback: one line per `every` steps. */
export type Progress = (line: string, last: boolean) => void;

/** The MoE layers' names, in graph order. */
function moeLayerNames(layers: number): string[] {
  const names: string[] = [];
  for (const side of ["enc", "dec"]) {
    for (let l = 0; l < layers; l++) if (l % 2 === 1) names.push(`${side}${l}_ffn`);
  }
  return names;
}

/** Checks the config against the library before anything runs (typed errors). */
export function checkConfig(config: NmtConfig): Topology {
  const topology = topologyOf(config);
  buildTransformer(
    new Graph(),
    modelConfig(config, { source: 8, target: 8 }, topology.coreCount, config.batch),
    false,
  );
  return topology;
}

/** Trains and evaluates; `trace` gets the last step's run when given. */
export function runNmt(
  config: NmtConfig,
  options: { progress?: Progress; trace?: (result: RunResult) => void } = {},
): NmtReport {
  const t0 = performance.now();
  const topology = topologyOf(config);
  const cores = topology.coreCount;
  const corpus: Corpus = buildCorpus({
    seed: config.seed,
    segmentMorphology: true,
    trainSentences: config.trainSentences,
    testSentences: config.testSentences + 20,
  });
  const sv = new Vocabulary(corpus.sourceVocabulary);
  const tv = new Vocabulary(corpus.targetVocabulary);
  // Pairs longer than the model's positions are left out (a few of the longest training ones).
  const fits = (p: SentencePair) => {
    const need = batchLengths([p]);
    return need.sourceLength <= config.sourceLength && need.targetLength <= config.targetLength;
  };
  const train = corpus.train.filter(fits);
  const sizes = { source: sv.size, target: tv.size };
  const names = moeLayerNames(config.layers);
  const recorder = new LayerRecorder(config.dense ? 0 : names.length);
  const model = buildTransformer(
    new Graph(),
    modelConfig(config, sizes, cores, config.batch, config.dense ? undefined : recorder),
  );
  const grads = model.grads!;
  const outputs = [model.loss, model.nll, ...(model.aux ? [model.aux] : []), ...grads];
  const plan = partition(model.graph, topology, { outputs });
  let params = initParams(model.params, config.dModel, config.seed);
  const optimizer: Optimizer = config.optimizer === "adam"
    ? adam({ learningRate: config.learningRate })
    : adafactor({
      learningRate: config.learningRate,
      multiplyByParameterScale: true,
      beta1: 0.9,
    });
  const { sourceLength: Ls, targetLength: Lt, batch: B } = config;
  let cursor = 0;
  const lossCurve: { step: number; loss: number; nll: number; aux: number }[] = [];
  let last: ReturnType<typeof plan.train> | undefined;
  let stats: MoeStatistics[] = [];
  const tTrain = performance.now();
  for (let step = 1; step <= config.steps; step++) {
    const pairs: SentencePair[] = [];
    for (let i = 0; i < B; i++) pairs.push(train[cursor++ % train.length]);
    const enc = encodeBatch(pairs, sv, tv, { sourceLength: Ls, targetLength: Lt });
    recorder.clear();
    const feeds = {
      ...params,
      source: enc.source,
      target_in: enc.targetIn,
      target_out: enc.targetOut,
      target_mask: enc.targetMask,
      ...attentionMasks(enc, Ls, Lt),
    };
    const isLast = step === config.steps;
    const run = plan.train(
      feeds,
      { optimizer, params: model.params, grads, step },
      { trace: isLast && options.trace !== undefined },
    );
    if (run.result.status !== "completed") {
      throw new RunFailed(
        `step ${step}: ${run.result.status}: ${(run.result as { error?: Error }).error?.message}`,
      );
    }
    const next: Record<string, Float32Array> = {};
    for (const p of model.params) next[p.name] = run.params.get(p)!;
    params = next;
    const loss = run.values.get(model.loss)![0];
    const nll = run.values.get(model.nll)![0];
    const aux = model.aux ? run.values.get(model.aux)![0] : 0;
    lossCurve.push({ step, loss, nll, aux });
    if (!Number.isFinite(loss)) throw new RunFailed(`step ${step}: the loss is ${loss}`);
    if (
      options.progress && config.every > 0 && (step % config.every === 0 || step === 1 || isLast)
    ) {
      const st = recorder.layers.map((r) => r.statistics());
      const overflow = overflowRate(st);
      const rate = step / ((performance.now() - tTrain) / 1000);
      options.progress(
        `step ${String(step).padStart(String(config.steps).length)}/${config.steps}  loss ${
          loss.toFixed(3)
        }  nll ${nll.toFixed(3)}  aux ${aux.toFixed(3)}  overflow ${overflow.toFixed(1)}%  ${
          rate.toFixed(2)
        } steps/s`,
        isLast,
      );
    }
    if (isLast) {
      last = run;
      stats = recorder.layers.map((r) => r.statistics());
      if (options.trace) options.trace(run.result);
    }
  }
  const trainSeconds = (performance.now() - tTrain) / 1000;

  // Greedy decoding on the host, all languages in one batch, stopping when every sentence ended.
  const tDecode = performance.now();
  const langs = corpus.languages.map((l) => l.name);
  const tests = Object.fromEntries(
    langs.map((l) => [l, corpus.test[l].filter(fits).slice(0, config.testSentences)]),
  );
  const testPairs = langs.flatMap((l) => tests[l]);
  const hyps = greedyDecode(config, sizes, params, testPairs, sv, tv);
  const bleuPerLanguage: Record<string, number> = {};
  let at = 0;
  const examples: NmtReport["examples"][number][] = [];
  for (const l of langs) {
    const n = tests[l].length;
    const h = hyps.slice(at, at + n);
    const refs = testPairs.slice(at, at + n);
    bleuPerLanguage[l] = corpusBleu(h, refs.map((p) => p.target), { tokenize: false }).score;
    if (examples.length < 4 && n > 0) {
      examples.push({
        language: l,
        source: refs[0].source.join(" "),
        reference: refs[0].target.join(" "),
        output: h[0].join(" "),
      });
    }
    at += n;
  }
  const decodeSeconds = (performance.now() - tDecode) / 1000;
  const bleu = langs.reduce((a, l) => a + bleuPerLanguage[l], 0) / langs.length;

  // The last step's breakdown, memory and traffic.
  const result = last!.result;
  const breakdown: Record<string, number> = stepBreakdown(model, plan, last!);
  const peakCore = result.cores.reduce((a, c) => (c.peakTotalBytes > a.peakTotalBytes ? c : a));
  const moeLayers = stats.map((s, i) => {
    const load = s.kept.map((row) => row.reduce((a, b) => a + b, 0));
    return {
      layer: names[i],
      capacity: s.capacity,
      overflowPercent: s.overflowPercent,
      droppedTokens: s.droppedTokens,
      loadPerExpert: load,
      loadCV: s.loadCV,
      loadMaxOverMean: s.loadMaxOverMean,
      auxLoss: s.auxLoss,
    };
  });
  return {
    config: { ...config, topologyName: topology.name, cores },
    model: config.dense ? "dense" : "moe",
    parameters: model.params.reduce((a, p) => a + p.size, 0),
    steps: config.steps,
    wallSeconds: (performance.now() - t0) / 1000,
    trainSeconds,
    decodeSeconds,
    losses: { first: lossCurve[0].loss, last: lossCurve[lossCurve.length - 1].loss },
    lossCurve,
    bleu,
    bleuPerLanguage,
    trainSizes: { ...corpus.trainSizes },
    trainPairs: { used: train.length, total: corpus.train.length },
    testPerLanguage: Object.fromEntries(langs.map((l) => [l, tests[l].length])),
    examples,
    simulatedStepSeconds: result.simulatedSeconds,
    stepBreakdownSeconds: breakdown,
    peakMemoryBytesPerCore: peakCore.peakTotalBytes,
    peakMemoryByCategory: { ...peakCore.peakBytes },
    budgetBytesPerCore: peakCore.budgetBytes,
    overflowRate: overflowRate(stats),
    moeLayers,
    messages: result.totals.messages,
    bytes: result.totals.bytes,
  };
}

/** A run that failed (out of memory, deadlock, a diverged loss): exit code 1. */
export class RunFailed extends Error {}

/** Percent of routing demand (both choices, all layers) that found no slot. */
function overflowRate(stats: readonly MoeStatistics[]): number {
  let demand = 0;
  let kept = 0;
  for (const s of stats) {
    for (const row of s.demand) for (const d of row) demand += d;
    for (const row of s.kept) for (const k of row) kept += k;
  }
  return demand === 0 ? 0 : (100 * (demand - kept)) / demand;
}

/**
 * Greedy decoding of `pairs` with the trained weights on one host, all in one batch. Step `t`
 * runs a graph of `t + 1` target positions (the causal decoder's first positions do not depend on
 * the later ones, so its logits equal the full graph's), and decoding stops once every sentence
 * has emitted EOS.
 */
export function greedyDecode(
  config: NmtConfig,
  sizes: { source: number; target: number },
  params: Record<string, Float32Array>,
  pairs: readonly SentencePair[],
  sv: Vocabulary,
  tv: Vocabulary,
): string[][] {
  const { sourceLength: Ls, targetLength: Lt, dModel: M } = config;
  const EB = pairs.length;
  if (EB === 0) return [];
  const all = encodeBatch(pairs, sv, tv, { sourceLength: Ls, targetLength: Lt });
  const outIds = new Int32Array(EB * Lt);
  const V = sizes.target;
  // The sentences still decoding: finished ones leave the batch.
  let active = Array.from({ length: EB }, (_, b) => b);
  for (let t = 0; t < Lt && active.length > 0; t++) {
    const T = t + 1;
    const n = active.length;
    const dm = buildTransformer(
      new Graph(),
      { ...modelConfig(config, sizes, undefined, n), targetLength: T },
      false,
    );
    const source = new Float32Array(n * Ls);
    const encoderMask = new Float32Array(n * Ls * Ls);
    const tin = new Float32Array(n * T);
    const decoderMask = new Float32Array(n * T * T);
    const crossMask = new Float32Array(n * T * Ls);
    active.forEach((b, r) => {
      source.set(all.source.subarray(b * Ls, (b + 1) * Ls), r * Ls);
      tin[r * T] = Vocabulary.BOS;
      for (let i = 1; i < T; i++) tin[r * T + i] = outIds[b * Lt + i - 1];
      for (let j = 0; j < Ls; j++) {
        if (all.sourceMask[b * Ls + j]) continue;
        for (let i = 0; i < Ls; i++) encoderMask[(r * Ls + i) * Ls + j] = -1e9;
        for (let i = 0; i < T; i++) crossMask[(r * T + i) * Ls + j] = -1e9;
      }
      for (let i = 0; i < T; i++) {
        for (let j = i + 1; j < T; j++) decoderMask[(r * T + i) * T + j] = -1e9;
      }
    });
    const logits = evaluate(dm.graph, {
      ...params,
      target_positions: params.target_positions.subarray(0, T * M),
      source,
      target_in: tin,
      target_out: new Float32Array(n * T),
      target_mask: new Float32Array(n * T),
      encoder_mask: encoderMask,
      decoder_mask: decoderMask,
      cross_mask: crossMask,
    }).get(dm.logits)!;
    const still: number[] = [];
    active.forEach((b, r) => {
      let best = Vocabulary.EOS;
      const at = (r * T + t) * V;
      for (let v = best + 1; v < V; v++) if (logits[at + v] > logits[at + best]) best = v;
      outIds[b * Lt + t] = best;
      if (best !== Vocabulary.EOS) still.push(b);
    });
    active = still;
  }
  return Array.from(
    { length: EB },
    (_, b) => tv.decode(Array.from(outIds.subarray(b * Lt, (b + 1) * Lt))),
  );
}

// ---------------------------------------------------------------------------------------------
// Printing.

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const ms = (s: number) => `${(s * 1e3).toFixed(3)} ms`;

/** The human-readable report. */
export function formatReport(r: NmtReport): string[] {
  const c = r.config;
  const out: string[] = [];
  out.push(
    `${
      r.model === "moe"
        ? `MoE (${c.experts} experts per MoE layer, top-2)`
        : "dense (FFN hidden 2H in the MoE layers' places)"
    }` +
      ` Transformer, ${c.layers}+${c.layers} layers, d_model ${c.dModel}, H ${c.hidden}, ` +
      `${
        r.parameters.toLocaleString("en-US")
      } parameters, on ${c.topologyName} (${c.cores} cores); ` +
      `${r.steps} steps of ${c.batch} sentences, ${c.optimizer} lr ${c.learningRate}`,
  );
  out.push(
    `wall ${r.wallSeconds.toFixed(1)} s (training ${r.trainSeconds.toFixed(1)} s, decoding ${
      r.decodeSeconds.toFixed(1)
    } s); loss ${r.losses.first.toFixed(3)} -> ${r.losses.last.toFixed(3)}`,
  );
  out.push("");
  out.push(
    `BLEU on ${c.testSentences} held-out sentences per language (high to low resource); ` +
      `trained on ${r.trainPairs.used} of ${r.trainPairs.total} pairs (the rest are longer than ` +
      `${c.sourceLength} source positions):`,
  );
  for (const [l, b] of Object.entries(r.bleuPerLanguage)) {
    out.push(
      `  ${l.padEnd(10)} ${b.toFixed(1).padStart(5)}   (${r.trainSizes[l]} training sentences${
        r.testPerLanguage[l] < c.testSentences ? `, ${r.testPerLanguage[l]} test sentences` : ""
      })`,
    );
  }
  out.push(`  ${"average".padEnd(10)} ${r.bleu.toFixed(1).padStart(5)}`);
  out.push("");
  out.push("Example translations:");
  for (const e of r.examples) {
    out.push(`  [${e.language}] ${e.source}`);
    out.push(`    reference: ${e.reference}`);
    out.push(`    output:    ${e.output}`);
  }
  out.push("");
  out.push(`Simulated step time: ${ms(r.simulatedStepSeconds)} (last step), by op class:`);
  for (const [k, s] of Object.entries(r.stepBreakdownSeconds)) {
    if (s === 0 && r.model === "dense" && k !== "FFN") continue;
    out.push(
      `  ${k.padEnd(24)} ${ms(s).padStart(12)}  ${
        (100 * s / r.simulatedStepSeconds).toFixed(1).padStart(5)
      }%`,
    );
  }
  out.push(
    "  (forward and backward of each class, core 0's timeline; the replicated weights' " +
      "gradients are all-reduced in one combined AllReduce; other collectives = the losses' " +
      "AllReduces; optimizer = the update, incl. gradient retiling)",
  );
  out.push("");
  out.push(
    `Peak memory per core: ${(r.peakMemoryBytesPerCore / MiB).toFixed(2)} MiB of ${
      (r.budgetBytesPerCore / GiB).toFixed(0)
    } GiB (${
      (100 * r.peakMemoryBytesPerCore / r.budgetBytesPerCore).toFixed(4)
    }%); peak by category:`,
  );
  out.push(
    "  " +
      Object.entries(r.peakMemoryByCategory).map(([k, v]) => `${k} ${(v / MiB).toFixed(2)} MiB`)
        .join(", "),
  );
  if (r.moeLayers.length > 0) {
    out.push("");
    out.push(
      `Expert load and overflow per MoE layer (last step; overflow ${
        r.overflowRate.toFixed(1)
      }% overall):`,
    );
    for (const m of r.moeLayers) {
      out.push(
        `  ${m.layer.padEnd(9)} capacity ${m.capacity}  overflow ${
          m.overflowPercent.map((p) => p.toFixed(1) + "%").join(" / ")
        } (1st / 2nd)  dropped ${m.droppedTokens}  load CV ${m.loadCV.toFixed(2)}  max/mean ${
          m.loadMaxOverMean.toFixed(2)
        }  aux ${m.auxLoss.toFixed(3)}`,
      );
      out.push(`            tokens per expert: ${m.loadPerExpert.join(" ")}`);
    }
  }
  out.push("");
  out.push(
    `Moved in the last step: ${r.messages.toLocaleString("en-US")} messages, ${
      (r.bytes / MiB).toFixed(2)
    } MiB`,
  );
  return out;
}

/** The command: returns the exit code. */
export function main(
  args: string[],
  print: (line: string) => void = console.log,
  fail: (line: string) => void = console.error,
): number {
  let parsed: ParsedArgs;
  try {
    parsed = parseNmtArgs(args);
    if (parsed.help) {
      print(HELP);
      return 0;
    }
    checkConfig(parsed.config);
    if (
      parsed.trace !== undefined && parsed.trace !== "-" &&
      Deno.permissions.querySync({ name: "write", path: parsed.trace }).state !== "granted"
    ) {
      throw new UsageError(
        `--trace ${parsed.trace} writes a file: run with --allow-write (or --trace alone for stdout)`,
      );
    }
  } catch (e) {
    const ours = e instanceof UsageError || e instanceof PodsimError ||
      (e instanceof TypeError && "code" in e && String(e.code).startsWith("ERR_PARSE_ARGS"));
    if (!ours) throw e;
    fail(`error: ${(e as Error).message.replaceAll("\n", " ")} (see --help)`);
    return 2;
  }
  const { config, json, trace } = parsed;
  const quiet = json || trace === "-";
  const tty = !quiet && print === console.log && Deno.stdout.isTerminal();
  const encoder = new TextEncoder();
  const progress: Progress | undefined = quiet ? undefined : tty
    ? (line, lastLine) => {
      Deno.stdout.writeSync(encoder.encode(`\r\x1b[2K${line}${lastLine ? "\n" : ""}`));
    }
    : (line) => print(line);
  let traceJson: string | undefined;
  let report: NmtReport;
  try {
    report = runNmt(config, {
      progress,
      trace: trace === undefined ? undefined : (result) => {
        traceJson = toChromeTraceJson(result.trace ?? []);
      },
    });
  } catch (e) {
    if (!(e instanceof RunFailed || e instanceof PodsimError)) throw e;
    fail(`error: the run failed: ${(e as Error).message}`);
    return 1;
  }
  if (trace === "-") {
    print(traceJson!);
    return 0;
  }
  if (trace !== undefined) {
    try {
      Deno.writeTextFileSync(trace, traceJson!);
    } catch (e) {
      fail(`error: cannot write the trace to ${trace}: ${(e as Error).message}`);
      return 1;
    }
  }
  if (json) {
    const { lossCurve: _curve, ...rest } = report;
    print(JSON.stringify({ ...rest, lossCurve: report.lossCurve.filter((_, i) => i % 10 === 0) }));
    return 0;
  }
  for (const line of formatReport(report)) print(line);
  if (trace !== undefined) print(`trace of the last step written to ${trace}`);
  return 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
