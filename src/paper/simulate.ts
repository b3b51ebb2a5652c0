/**
 * One training step of a paper-scale model in shape-only mode: the MoE Transformer built at
 * full shape, partitioned over the preset's slice, and run on its core actors -- forward,
 * backward, the combined gradient AllReduce and the Adafactor update -- by the same model, MoE
 * layer, partitioner and collectives as the numeric example, with no data. Reports the step
 * time by op class, the roofline step time, the per-core memory ledger, and what training on 1T
 * tokens would take.
 *
 * @module
 */

import { OptionsError } from "../errors.ts";
import type { MemoryCategory } from "../actors/memory_ledger.ts";
import { stepBreakdown, type StepClass } from "../moe/step_breakdown.ts";
import { buildTransformer, type TransformerConfig } from "../moe/transformer.ts";
import { Graph, type Node } from "../ops/graph.ts";
import { BYTES_PER_ELEMENT } from "../ops/shape.ts";
import { adafactor } from "../ops/optimizers.ts";
import { partition } from "../ops/partition.ts";
import type { RematPlan } from "../ops/spmd_program.ts";
import { sliceTopology } from "../topology/slices.ts";
import { type PaperConfig, paperConfig, type PaperOverrides } from "./presets.ts";

/** How activations that do not fit are handled. */
export type RematPolicy = "auto" | "none" | "full";

/** Every remat policy. */
export const REMAT_POLICIES: readonly RematPolicy[] = Object.freeze(["auto", "none", "full"]);

/** Options of {@linkcode simulatePaperStep}. */
export interface PaperStepOptions extends PaperOverrides {
  /**
   * "none" keeps every forward activation the backward pass needs (the run ends out of memory
   * when they do not fit); "full" keeps only each block's residual input (and what collectives
   * produced) and recomputes the rest in the backward pass, charging the time; "auto" (the
   * default) recomputes nothing when the schedule's estimated peak fits the core's HBM with
   * a tenth to spare, else the fewest of the largest activations that make it fit (or all).
   */
  readonly remat?: RematPolicy;
}

/** The per-core memory categories of the report. */
export const PAPER_MEMORY_CATEGORIES = [
  "replicated weights",
  "expert weights",
  "optimizer state",
  "gradients",
  "activations",
  "temporaries",
  "buffers",
] as const;

const LEDGER_CATEGORY: Record<typeof PAPER_MEMORY_CATEGORIES[number], MemoryCategory> = {
  "replicated weights": "weights",
  "expert weights": "sharded weights",
  "optimizer state": "optimizer",
  gradients: "gradients",
  activations: "activations",
  temporaries: "temporaries",
  buffers: "buffers",
};

/**
 * The share of HBM the schedule's estimate may fill when "auto" chooses: the estimate leaves out
 * retiled temporaries and the transients of recomputation.
 */
const HEADROOM = 0.9;

/**
 * "auto": no remat when the estimate fits; else the largest recomputable activations, as few as
 * make the estimate fit (a binary search over how many, largest first); else all of them.
 */
function chooseRemat(
  plan: ReturnType<typeof partition>,
  full: RematPlan,
  estimateWith: (remat: RematPlan) => number,
  { estimate, budget }: { estimate: number; budget: number },
): RematPlan | undefined {
  const limit = budget * HEADROOM;
  if (estimate <= limit) return undefined;
  const bytes = (n: Node) =>
    plan.shardings.get(n)!.localShape(n.shape).reduce((a, b) => a * b, 1) *
    BYTES_PER_ELEMENT[n.dtype];
  const largest = [...full.recompute].sort((a, b) => bytes(b) - bytes(a) || a.id - b.id);
  const first = (k: number): RematPlan => ({
    recompute: new Set(largest.slice(0, k)),
    backwardFrom: full.backwardFrom,
  });
  if (estimateWith(full) > limit) return full;
  let [lo, hi] = [1, largest.length]; // the smallest k that fits is in [lo, hi]
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (estimateWith(first(mid)) <= limit) hi = mid;
    else lo = mid + 1;
  }
  return hi === largest.length ? full : first(hi);
}

/** What one simulated step reports (also the `--json` object of examples/paper_scale.ts). */
export interface PaperStepReport {
  /** The preset's name. */
  readonly model: string;
  /** Core actors simulated. */
  readonly cores: number;
  /** The slice, e.g. "v3-2048". */
  readonly slice: string;
  /** The resolved configuration. */
  readonly config: PaperConfig;
  /** Parameters of the built model (compare `config.paperParameters`). */
  readonly parameters: number;
  /** "completed", or "out_of_memory" (with `error` holding the ledger). */
  readonly status: "completed" | "out_of_memory";
  /** Why the run failed, with the ledger of the core that ran out. */
  readonly error?: string;
  /** The remat policy asked for. */
  readonly rematPolicy: RematPolicy;
  /** What was recomputed: nothing, the largest activations ("auto"), or all it may. */
  readonly remat: "none" | "partial" | "full";
  /** Forward activations recomputed in the backward pass. */
  readonly recomputedNodes: number;
  /** The schedule's estimated peak per core without remat (what "auto" decided on). */
  readonly estimatedPeakWithoutRematBytes: number;
  /** Simulated step time. */
  readonly stepSeconds: number;
  /** Every op at peak FLOP/s or HBM bandwidth, every byte sent at the core's link bandwidth. */
  readonly rooflineStepSeconds: number;
  /** stepSeconds / rooflineStepSeconds. */
  readonly rooflineRatio: number;
  /** Simulated seconds by op class; they add up to the step. */
  readonly breakdownSeconds: Record<StepClass, number>;
  /** Peak bytes per category on the core with the highest peak. */
  readonly memoryBytesPerCore: Record<typeof PAPER_MEMORY_CATEGORIES[number], number>;
  /** The highest peak of any core, all categories at once. */
  readonly peakMemoryBytesPerCore: number;
  /** HBM per core (16 GiB). */
  readonly budgetBytesPerCore: number;
  /** Days to train on 1T tokens at this step time. */
  readonly daysFor1TTokens: number;
  /** Core-years to train on 1T tokens (days x cores / 365). */
  readonly coreYearsFor1TTokens: number;
  /** Messages between cores in the step. */
  readonly messages: number;
  /** Bytes moved between cores in the step. */
  readonly bytesMoved: number;
  /** FLOPs of all cores in the step. */
  readonly flops: number;
  /** Combined gradient AllReduces (one per replica-group set). */
  readonly gradientAllReduces: number;
  /** Wall time of the simulation: building and partitioning the graph, running the step. */
  readonly wallSeconds: number;
  /** Of the wall time: building and partitioning the graph. */
  readonly buildSeconds: number;
  /** Of the wall time: running the step on the core actors. */
  readonly runSeconds: number;
}

const T = 1e12;

/**
 * Simulates one training step of the preset `model` (see PAPER_PRESETS) on its slice's core
 * actors, shape-only. Bad input (an unknown model, a batch that does not divide into groups
 * over the cores, a capacity below 1) is refused with an OptionsError before anything is built.
 *
 * @example
 * ```ts ignore
 * import { simulatePaperStep } from "./simulate.ts";
 * const r = simulatePaperStep("128E-12L");
 * console.log(r.stepSeconds, r.peakMemoryBytesPerCore, r.breakdownSeconds["expert FFN"]);
 * ```
 */
export function simulatePaperStep(model: string, options: PaperStepOptions = {}): PaperStepReport {
  const t0 = performance.now();
  const policy = options.remat ?? "auto";
  if (!REMAT_POLICIES.includes(policy)) {
    throw new OptionsError(
      `paper scale: remat must be one of ${REMAT_POLICIES.join(", ")}, got ${
        JSON.stringify(policy)
      }`,
    );
  }
  const config = paperConfig(model, options);
  return simulateConfig(config, policy, t0);
}

/** The MoE Transformer of a paper configuration (encoder and decoder of layers / 2 each). */
function transformerConfig(config: PaperConfig): TransformerConfig {
  return {
    batch: config.sentences,
    sourceLength: config.sequenceLength,
    targetLength: config.sequenceLength,
    sourceVocabulary: config.sourceVocabulary,
    targetVocabulary: config.targetVocabulary,
    dModel: config.dModel,
    heads: config.heads,
    headDim: config.headDim,
    hidden: config.hidden,
    layers: config.layers / 2,
    experts: config.experts,
    cores: config.cores,
    groupSize: config.groupSize,
    gate: { capacity: config.capacity },
  };
}

/**
 * Builds a configuration's forward graph (a fraction of a second), so that what the model
 * refuses -- an expert capacity whose buffers cannot fit a core, say -- is refused before any
 * simulation starts. Throws the model's OptionsError.
 *
 * @example
 * ```ts
 * import { checkPaperConfig } from "./simulate.ts";
 * import { paperConfig } from "./presets.ts";
 * checkPaperConfig(paperConfig("512E-12L")); // fine
 * try {
 *   checkPaperConfig(paperConfig("512E-12L", { capacity: 100_000 }));
 * } catch (e) {
 *   console.log((e as Error).message.startsWith("moeLayer: capacity 100000 needs")); // true
 * }
 * ```
 */
export function checkPaperConfig(config: PaperConfig): void {
  buildTransformer(new Graph(), transformerConfig(config), false);
}

/** {@linkcode simulatePaperStep} for a resolved configuration (tests scale presets down). */
export function simulateConfig(
  config: PaperConfig,
  policy: RematPolicy,
  t0 = performance.now(),
): PaperStepReport {
  const topology = sliceTopology(config.slice);
  const hw = topology.hardware;
  const built = buildTransformer(new Graph(), transformerConfig(config));
  const grads = built.grads!;
  const plan = partition(built.graph, topology, { outputs: [built.loss, ...grads] });
  const optimizer = adafactor();
  const budget = hw.hbmBytesPerCore;
  const estimate = plan.estimateTrainingPeak(optimizer, built.params, grads);
  const full = plan.rematerialisable(built.loss, built.checkpoints);
  const chosen = policy === "none"
    ? undefined
    : policy === "full"
    ? full
    : chooseRemat(plan, full, (r) => plan.estimateTrainingPeak(optimizer, built.params, grads, r), {
      estimate,
      budget,
    });
  const buildSeconds = (performance.now() - t0) / 1000;
  const tRun = performance.now();
  const run = (plan_: RematPlan | undefined) =>
    plan.train(undefined, { optimizer, params: built.params, grads, step: 1, remat: plan_ });
  let used = chosen;
  let step = run(used);
  if (step.result.status === "out_of_memory" && policy === "auto" && used !== full) {
    // The estimate leaves retiled temporaries and recomputation's transients out: what fitted
    // on paper did not on the cores. Recompute everything.
    used = full;
    step = run(used);
  }
  const remat = used === undefined ? "none" : used === full ? "full" : "partial";
  const runSeconds = (performance.now() - tRun) / 1000;
  const { result } = step;
  if (result.status === "deadlocked") throw result.error;
  const stepSeconds = result.simulatedSeconds;
  const top = result.cores.reduce((a, c) => (c.peakTotalBytes > a.peakTotalBytes ? c : a));
  const memory = Object.fromEntries(
    Object.entries(LEDGER_CATEGORY).map(([name, category]) => [name, top.peakBytes[category]]),
  ) as PaperStepReport["memoryBytesPerCore"];
  // The roofline: a core's compute at the hardware's peaks (the TPU_V3 preset's efficiencies
  // are 1, so a core's compute seconds are its ops' roofline times), and every byte it sends at
  // its share of its chip's four links.
  const injection = (4 * hw.iciLinkBandwidth) / hw.coresPerChip;
  const computeRoofline = Math.max(
    ...result.cores.map((c) => c.computeSeconds * hw.computeEfficiency),
  );
  const linkRoofline = Math.max(...result.cores.map((c) => c.bytesSent)) / injection;
  const rooflineStepSeconds = computeRoofline + linkRoofline;
  const days = (stepSeconds * (T / config.batchTokens)) / 86_400;
  return {
    model: config.name,
    cores: config.cores,
    slice: config.slice,
    config,
    parameters: built.params.reduce((n, p) => n + p.size, 0),
    status: result.status,
    ...(result.status === "out_of_memory" ? { error: result.error.message } : {}),
    rematPolicy: policy,
    remat,
    recomputedNodes: used?.recompute.size ?? 0,
    estimatedPeakWithoutRematBytes: estimate,
    stepSeconds,
    rooflineStepSeconds,
    rooflineRatio: stepSeconds / rooflineStepSeconds,
    breakdownSeconds: stepBreakdown(built, plan, step),
    memoryBytesPerCore: memory,
    peakMemoryBytesPerCore: top.peakTotalBytes,
    budgetBytesPerCore: budget,
    daysFor1TTokens: days,
    coreYearsFor1TTokens: (days * config.cores) / 365,
    messages: result.totals.messages,
    bytesMoved: result.totals.bytes,
    flops: result.totals.flops,
    gradientAllReduces: step.gradientAllReduces,
    wallSeconds: (performance.now() - t0) / 1000,
    buildSeconds,
    runSeconds,
  };
}
