// GShard's model family at paper scale (src/paper/, examples/paper_scale.ts): presets resolve
// to the paper's configurations and refuse bad input before building anything; scaled-down
// configurations show that the shape-only step is the numeric step without the numbers, that
// memory per core stays flat as the experts grow with the cores and grows linearly with depth,
// and that a model whose activations do not fit is rescued by rematerialisation.
import assert from "node:assert/strict";
import { main } from "../examples/paper_scale.ts";
import { adafactor, Graph, OptionsError, partition, sliceTopology } from "../mod.ts";
import { STEP_CLASSES } from "../src/moe/step_breakdown.ts";
import { buildTransformer } from "../src/moe/transformer.ts";
import { PAPER_PRESETS, type PaperConfig, paperConfig } from "../src/paper/presets.ts";
import {
  type PaperStepReport,
  type RematPolicy,
  simulateConfig,
  simulatePaperStep,
} from "../src/paper/simulate.ts";
import { randomArray } from "./_partition_helpers.ts";
import { test } from "./_test.ts";

const GiB = 2 ** 30;
const M = 2 ** 20;
const F32 = 4;

test("paperConfig refuses an unknown model with an OptionsError that lists every preset", () => {
  assert.throws(() => paperConfig("4096E-12L"), (e: unknown) => {
    assert.ok(e instanceof OptionsError);
    assert.match(e.message, /unknown model "4096E-12L"/);
    for (const p of PAPER_PRESETS) assert.ok(e.message.includes(p.name), p.name);
    return true;
  });
  assert.equal(PAPER_PRESETS.length, 7);
});

test("paperConfig refuses batches that do not split into sequences, sentences per core or groups per core, and capacities below one token", () => {
  // 1M tokens on 128 cores: 8192 tokens per core, not a whole number of groups of 1000.
  assert.throws(
    () => paperConfig("128E-12L", { groupSize: 1000 }),
    (e: unknown) =>
      e instanceof OptionsError && /8192 tokens do not divide into groups of 1000/.test(e.message),
  );
  assert.throws(
    () => paperConfig("128E-12L", { sequenceLength: 3 }),
    (e: unknown) =>
      e instanceof OptionsError && /does not split into whole sequences of 3/.test(e.message),
  );
  // 100 sentences of 256 tokens over 128 cores.
  assert.throws(
    () => paperConfig("128E-12L", { batchTokens: 100 * 256 }),
    (e: unknown) =>
      e instanceof OptionsError && /100 sentences do not divide over 128 cores/.test(e.message),
  );
  for (const capacity of [0, -1, 1.5]) {
    assert.throws(
      () => paperConfig("512E-12L", { capacity }),
      (e: unknown) => e instanceof OptionsError && /capacity must be an integer/.test(e.message),
      `capacity ${capacity}`,
    );
  }
  assert.throws(() => paperConfig("512E-12L", { groupSize: 0 }), OptionsError);
  // The same checks guard the simulation, before anything is built.
  assert.throws(() => simulatePaperStep("2048E-60L", { capacity: 0 }), OptionsError);
  assert.throws(
    () => simulatePaperStep("2048E-60L", { remat: "some" as RematPolicy }),
    /remat must be one of auto, none, full/,
  );
});

test("paperConfig resolves the paper's defaults: sequences of 256, groups of 1024, C = 2S/E", () => {
  const c512 = paperConfig("512E-12L");
  assert.equal(c512.slice, "v3-512");
  assert.equal(c512.cores, 512);
  assert.equal(c512.experts, 512);
  assert.equal(c512.groups, 1024);
  assert.equal(c512.capacity, 4);
  assert.equal(c512.sequenceLength, 256);
  assert.equal(c512.groupSize, 1024);
  assert.equal(c512.sentences, M / 256);
  assert.equal(c512.dModel, 1024);
  assert.equal(c512.hidden, 8192);
  assert.equal(paperConfig("128E-36L").capacity, 16);
  for (const name of ["2048E-36L", "2048E-60L"]) {
    const c = paperConfig(name);
    assert.equal(c.slice, "v3-2048");
    assert.equal(c.capacity, 1);
    assert.equal(c.batchTokens, 4 * M);
    assert.equal(c.groups, 4096);
  }
  assert.equal(paperConfig("2048E-60L").layers, 60);
  assert.equal(paperConfig("2048E-60L").paperParameters, "1T");
  const longer = paperConfig("128E-12L", { sequenceLength: 512, capacity: 8 });
  assert.equal(longer.sentences, M / 512);
  assert.equal(longer.capacity, 8);
});

/** The 128E-12L preset scaled down to a v3-8 (or as `overrides` say): shape-only runs are fast. */
function scaled(overrides: Partial<PaperConfig> = {}): PaperConfig {
  return {
    ...paperConfig("128E-12L"),
    experts: 8,
    cores: 8,
    slice: "v3-8",
    layers: 4,
    dModel: 16,
    hidden: 32,
    heads: 2,
    headDim: 8,
    sourceVocabulary: 32,
    targetVocabulary: 32,
    sequenceLength: 8,
    sentences: 16,
    batchTokens: 128,
    groupSize: 16,
    groups: 8,
    capacity: 4,
    ...overrides,
  };
}

/** The model simulateConfig builds for `c`. */
function buildLikeSimulate(c: PaperConfig) {
  return buildTransformer(new Graph(), {
    batch: c.sentences,
    sourceLength: c.sequenceLength,
    targetLength: c.sequenceLength,
    sourceVocabulary: c.sourceVocabulary,
    targetVocabulary: c.targetVocabulary,
    dModel: c.dModel,
    heads: c.heads,
    headDim: c.headDim,
    hidden: c.hidden,
    layers: c.layers / 2,
    experts: c.experts,
    cores: c.cores,
    groupSize: c.groupSize,
    gate: { capacity: c.capacity },
  });
}

test("a numeric and a shape-only training step of a scaled-down paper model take the same time, move the same bytes and hold the same memory", () => {
  const config = scaled();
  const model = buildLikeSimulate(config);
  const grads = model.grads!;
  const plan = partition(model.graph, sliceTopology(config.slice), {
    outputs: [model.loss, ...grads],
  });
  const feeds: Record<string, Float32Array> = {};
  model.params.forEach((p, i) => feeds[p.name] = randomArray(p.size, 100 + i).map((v) => v * 0.3));
  const ids = (n: number, vocabulary: number, seed: number) =>
    randomArray(n, seed).map((v) => 1 + Math.floor(((v + 1) / 2) * (vocabulary - 1)));
  const { sentences: B, sequenceLength: L } = config;
  feeds.source = ids(B * L, config.sourceVocabulary, 1);
  feeds.target_in = ids(B * L, config.targetVocabulary, 2);
  feeds.target_out = ids(B * L, config.targetVocabulary, 3);
  feeds.target_mask = new Float32Array(B * L).fill(1);
  feeds.encoder_mask = new Float32Array(B * L * L);
  feeds.decoder_mask = new Float32Array(B * L * L);
  feeds.cross_mask = new Float32Array(B * L * L);
  const training = { optimizer: adafactor(), params: model.params, grads, step: 1 };
  const numeric = plan.train(feeds, training);
  const shapes = plan.train(undefined, training);
  assert.equal(numeric.result.status, "completed");
  assert.ok(Number.isFinite(numeric.values.get(model.loss)![0]));
  assert.equal(shapes.values.size, 0);
  assert.equal(shapes.result.simulatedSeconds, numeric.result.simulatedSeconds);
  assert.equal(shapes.result.totals.flops, numeric.result.totals.flops);
  assert.equal(shapes.result.totals.bytes, numeric.result.totals.bytes);
  assert.equal(shapes.result.totals.messages, numeric.result.totals.messages);
  assert.deepEqual(
    shapes.result.cores.map((c) => c.peakBytes),
    numeric.result.cores.map((c) => c.peakBytes),
  );
  // simulateConfig builds, partitions and runs the same step.
  const report = simulateConfig(config, "none");
  assert.equal(report.status, "completed");
  assert.equal(report.stepSeconds, numeric.result.simulatedSeconds);
  assert.equal(report.flops, numeric.result.totals.flops);
  assert.equal(report.bytesMoved, numeric.result.totals.bytes);
  assert.equal(report.messages, numeric.result.totals.messages);
  assert.equal(report.parameters, model.params.reduce((n, p) => n + p.size, 0));
  assert.equal(report.gradientAllReduces, numeric.gradientAllReduces);
});

/** Asserts the breakdown has every class, none negative, adding up to the step. */
function assertBreakdown(r: PaperStepReport): void {
  assert.deepEqual(Object.keys(r.breakdownSeconds).sort(), [...STEP_CLASSES].sort());
  let total = 0;
  for (const c of STEP_CLASSES) {
    assert.ok(r.breakdownSeconds[c] >= 0, `${c}: ${r.breakdownSeconds[c]} s`);
    total += r.breakdownSeconds[c];
  }
  assert.ok(
    Math.abs(total - r.stepSeconds) <= 1e-9 * r.stepSeconds,
    `${total} vs ${r.stepSeconds}`,
  );
}

test("a step's breakdown by op class adds up to its simulated time, with and without remat", () => {
  const none = simulateConfig(scaled(), "none");
  const full = simulateConfig(scaled(), "full");
  for (const r of [none, full]) {
    assertBreakdown(r);
    for (
      const c of ["attention", "expert FFN", "dispatch AllToAll", "gradient AllReduce"] as const
    ) {
      assert.ok(r.breakdownSeconds[c] > 0, `${r.remat}: ${c}`);
    }
  }
  assert.equal(none.breakdownSeconds.recompute, 0);
  assert.ok(full.breakdownSeconds.recompute > 0);
  assert.equal(full.remat, "full");
  assert.ok(full.stepSeconds > none.stepSeconds);
  assert.ok(full.memoryBytesPerCore.activations < none.memoryBytesPerCore.activations);
  assert.equal(none.gradientAllReduces, 1);
});

/**
 * A scaled-down configuration with `cores` experts and cores and one group of 16 tokens per
 * core (two sentences of 8), C = 2S/E as in the paper, and `layers` layers; d_model 64.
 */
function perCoreConfig(cores: 8 | 32, layers: number): PaperConfig {
  const S = 16;
  return scaled({
    experts: cores,
    cores,
    slice: cores === 8 ? "v3-8" : "v3-32",
    layers,
    dModel: 64,
    hidden: 128,
    headDim: 32,
    sentences: 2 * cores,
    batchTokens: S * cores,
    groupSize: S,
    groups: cores,
    capacity: (2 * S) / cores,
  });
}

test("at fixed tokens per core, memory per core stays flat as the experts grow with the cores", () => {
  const small = simulateConfig(perCoreConfig(8, 4), "none");
  const large = simulateConfig(perCoreConfig(32, 4), "none");
  assert.equal(small.status, "completed");
  assert.equal(large.status, "completed");
  const a = small.memoryBytesPerCore;
  const b = large.memoryBytesPerCore;
  // One expert per core in each MoE layer: the same expert weights on every core.
  assert.equal(b["expert weights"], a["expert weights"]);
  assert.ok(a["expert weights"] > 0);
  // What grows with E is the gate: its weights [M, E] (replicated) and, on each core, one
  // [S, E] gate tensor per MoE layer among the activations at the peak. Two MoE layers here
  // (one in the encoder, one in the decoder), one group per core.
  const moeLayers = 2;
  const dE = 32 - 8;
  assert.equal(b["replicated weights"] - a["replicated weights"], moeLayers * 64 * dE * F32);
  assert.equal(b.activations - a.activations, moeLayers * 16 * dE * F32);
  assert.ok(b.activations / a.activations - 1 < 0.01, `${a.activations} -> ${b.activations}`);
  assert.ok(
    large.peakMemoryBytesPerCore / small.peakMemoryBytesPerCore - 1 < 0.025,
    `${small.peakMemoryBytesPerCore} -> ${large.peakMemoryBytesPerCore}`,
  );
});

test("memory per core grows linearly with depth: every 4 layers add the same bytes", () => {
  const reports = [4, 8, 12].map((layers) => simulateConfig(perCoreConfig(8, layers), "none"));
  for (const r of reports) assert.equal(r.status, "completed");
  const categories = [
    "activations",
    "replicated weights",
    "expert weights",
    "optimizer state",
    "gradients",
  ] as const;
  for (const c of categories) {
    const [l4, l8, l12] = reports.map((r) => r.memoryBytesPerCore[c]);
    assert.ok(l8 > l4, `${c}: ${l4} -> ${l8}`);
    assert.equal(l12 - l8, l8 - l4, `${c}: ${l4}, ${l8}, ${l12}`);
  }
  // Two MoE layers (one expert each, [M, H] and [H, M]) per 4 layers.
  const expert = reports.map((r) => r.memoryBytesPerCore["expert weights"]);
  assert.equal(expert[1] - expert[0], 2 * 2 * 64 * 128 * F32);
});

/**
 * Scaled down to a v3-8 but with activations far beyond 16 GiB per core (shape-only: nothing
 * is allocated for real): sequences of 2048, d_model 1024, 8 layers, 8 sentences per core.
 */
const DEEP = scaled({
  layers: 8,
  sequenceLength: 2048,
  dModel: 1024,
  hidden: 4096,
  heads: 8,
  headDim: 128,
  sourceVocabulary: 1024,
  targetVocabulary: 1024,
  sentences: 64,
  batchTokens: 64 * 2048,
  groupSize: 2048,
  groups: 64,
  capacity: 512,
});

test("a model whose activations exceed 16 GiB per core runs out of memory without remat, and fits with it", () => {
  const none = simulateConfig(DEEP, "none");
  assert.equal(none.status, "out_of_memory");
  assert.equal(none.remat, "none");
  assert.ok(none.estimatedPeakWithoutRematBytes > 16 * GiB);
  assert.equal(none.budgetBytesPerCore, 16 * GiB);
  // The error is the core's ledger.
  assert.match(none.error!, /out of memory/);
  assert.match(none.error!, /asked for [\d.]+ [KMG]iB of activations/);
  for (const category of ["weights", "sharded weights", "activations", "optimizer"]) {
    assert.match(none.error!, new RegExp(`${category}\\s+live\\s+[\\d.]+ [KMG]?i?B\\s+peak`));
  }
  assert.match(none.error!, /budget 16\.00 GiB/);

  const auto = simulateConfig(DEEP, "auto");
  assert.equal(auto.status, "completed");
  assert.equal(auto.rematPolicy, "auto");
  assert.notEqual(auto.remat, "none");
  assert.ok(auto.recomputedNodes > 0);
  assert.ok(auto.peakMemoryBytesPerCore < 16 * GiB, `${auto.peakMemoryBytesPerCore / GiB} GiB`);
  assert.ok(auto.breakdownSeconds.recompute > 0);
  assertBreakdown(auto);
  // "full" recomputes all it may: at least as much as auto chose, for less memory and more time.
  const full = simulateConfig(DEEP, "full");
  assert.equal(full.remat, "full");
  assert.ok(full.recomputedNodes >= auto.recomputedNodes);
  assert.ok(full.peakMemoryBytesPerCore <= auto.peakMemoryBytesPerCore);
  assert.ok(full.stepSeconds >= auto.stepSeconds);
  assertBreakdown(full);
});

test("auto keeps every activation when the estimated peak fits", () => {
  const r = simulateConfig(scaled(), "auto");
  assert.equal(r.status, "completed");
  assert.equal(r.remat, "none");
  assert.ok(r.estimatedPeakWithoutRematBytes <= r.budgetBytesPerCore);
  assert.equal(r.breakdownSeconds.recompute, 0);
});

function run(args: string[]): { code: number; out: string[]; err: string } {
  const out: string[] = [];
  const err: string[] = [];
  const code = main(args, (l) => out.push(l), (l) => err.push(l));
  return { code, out, err: err.join("\n") };
}

test("examples/paper_scale.ts refuses bad input with exit code 2 before simulating, and --help exits 0", () => {
  const unknown = run(["--model", "nope"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /unknown model "nope"/);
  for (const p of PAPER_PRESETS) assert.ok(unknown.err.includes(p.name), p.name);
  const nothing = run([]);
  assert.equal(nothing.code, 2);
  assert.match(nothing.err, /give --model NAME or --all/);
  assert.equal(run(["--all", "--model", "128E-12L"]).code, 2);
  const capacity = run(["--model", "128E-12L", "--capacity", "0"]);
  assert.equal(capacity.code, 2);
  assert.match(capacity.err, /--capacity/);
  const groups = run(["--model", "128E-12L", "--group-size", "1000"]);
  assert.equal(groups.code, 2);
  assert.match(groups.err, /do not divide into groups of 1000/);
  // Every preset is checked before the first runs.
  assert.equal(run(["--all", "--seq-length", "3"]).code, 2);
  assert.equal(run(["--model", "128E-12L", "--remat", "some"]).code, 2);
  assert.equal(run(["--model", "128E-12L", "--bogus"]).code, 2);
  for (const r of [unknown, nothing, capacity, groups]) assert.equal(r.out.length, 0);
  const help = run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out.join("\n"), /--model NAME/);
  for (const p of PAPER_PRESETS) assert.ok(help.out.join("\n").includes(p.name), p.name);
});

test("examples/paper_scale.ts --model 128E-12L --json prints the report, its breakdown adding up to the step", () => {
  const { code, out, err } = run(["--model", "128E-12L", "--json"]);
  assert.equal(code, 0, err);
  assert.equal(out.length, 1);
  const r = JSON.parse(out[0]);
  for (
    const k of [
      "model",
      "cores",
      "stepSeconds",
      "rooflineStepSeconds",
      "breakdownSeconds",
      "memoryBytesPerCore",
      "peakMemoryBytesPerCore",
      "daysFor1TTokens",
      "coreYearsFor1TTokens",
      "wallSeconds",
    ]
  ) {
    assert.ok(k in r, k);
  }
  assert.equal(r.model, "128E-12L");
  assert.equal(r.cores, 128);
  assert.equal(r.status, "completed");
  assert.equal(typeof r.breakdownSeconds, "object");
  assert.equal(typeof r.memoryBytesPerCore, "object");
  assert.ok(r.stepSeconds > 0 && r.rooflineStepSeconds > 0);
  assert.ok(r.rooflineStepSeconds <= r.stepSeconds);
  assert.ok(r.peakMemoryBytesPerCore <= 16 * GiB);
  assert.ok(r.daysFor1TTokens > 0 && r.coreYearsFor1TTokens > 0 && r.wallSeconds > 0);
  assertBreakdown(r);
  // 1T tokens in steps of 1M tokens, on 128 cores.
  const days = (r.stepSeconds * (1e12 / M)) / 86_400;
  assert.ok(Math.abs(r.daysFor1TTokens - days) <= 1e-9 * days);
  assert.ok(Math.abs(r.coreYearsFor1TTokens - (days * 128) / 365) <= 1e-9 * days);
});

test("MoE(2048E, 60L)'s per-core step does not fit 16 GiB without remat; auto recomputes and fits", () => {
  // The preset on 8 cores with its per-core shapes: 2048 tokens per core in 2 groups of 1024,
  // one expert per core with 2 x 2048 capacity slots (C = 2S/E), the paper's widths and depth.
  // Only the router's [M, E] weights and [S, E] logits are smaller than on 2048 cores, so this
  // is a lower bound of the real preset's memory.
  const preset = paperConfig("2048E-60L");
  const config: PaperConfig = {
    ...preset,
    experts: 8,
    cores: 8,
    slice: "v3-8",
    batchTokens: 8 * 2048,
    sentences: (8 * 2048) / preset.sequenceLength,
    groups: 16,
    capacity: Math.ceil((2 * preset.groupSize) / 8),
  };
  const none = simulateConfig(config, "none");
  assert.equal(none.status, "out_of_memory");
  assert.ok(
    none.estimatedPeakWithoutRematBytes > 16 * GiB,
    `${none.estimatedPeakWithoutRematBytes / GiB} GiB`,
  );
  const auto = simulateConfig(config, "auto");
  assert.equal(auto.status, "completed");
  assert.notEqual(auto.remat, "none");
  assert.ok(auto.peakMemoryBytesPerCore < 16 * GiB, `${auto.peakMemoryBytesPerCore / GiB} GiB`);
  assert.ok(auto.breakdownSeconds.recompute > 0);
});

test("examples/paper_scale.ts refuses a capacity whose expert buffers cannot fit a core before simulating", () => {
  const { code, out, err } = run(["--all", "--capacity", "100000"]);
  assert.equal(code, 2);
  assert.deepEqual(out, []);
  assert.match(err, /^error: moeLayer: capacity 100000 needs \d+ bytes per core/);
});
