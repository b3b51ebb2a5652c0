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
import { buildTransformer } from "../moe/transformer.ts";
import { Graph } from "../ops/graph.ts";
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
   * default) is "none" when the schedule's estimated peak fits the core's HBM, else "full".
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

/** What one simulated step reports (also the `--json` object of examples/paper_scale.ts). */
export interface PaperStepReport {
  readonly model: string;
  readonly cores: number;
  readonly slice: string;
  readonly config: PaperConfig;
  /** Parameters of the built model (compare `config.paperParameters`). */
  readonly parameters: number;
  /** "completed", or "out_of_memory" (with `error` holding the ledger). */
  readonly status: "completed" | "out_of_memory";
  readonly error?: string;
  /** The policy asked for and the one used. */
  readonly rematPolicy: RematPolicy;
  readonly remat: "none" | "full";
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
  readonly peakMemoryBytesPerCore: number;
  readonly budgetBytesPerCore: number;
  /** Training on 1T tokens at this step time. */
  readonly daysFor1TTokens: number;
  readonly coreYearsFor1TTokens: number;
  /** Messages and bytes moved between cores in the step; FLOPs of all cores. */
  readonly messages: number;
  readonly bytesMoved: number;
  readonly flops: number;
  /** Combined gradient AllReduces (one per replica-group set). */
  readonly gradientAllReduces: number;
  /** Wall time of the simulation: building and partitioning the graph, running the step. */
  readonly wallSeconds: number;
  readonly buildSeconds: number;
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

/** {@linkcode simulatePaperStep} for a resolved configuration (tests scale presets down). */
export function simulateConfig(
  config: PaperConfig,
  policy: RematPolicy,
  t0 = performance.now(),
): PaperStepReport {
  const topology = sliceTopology(config.slice);
  const hw = topology.hardware;
  const half = config.layers / 2;
  const built = buildTransformer(new Graph(), {
    batch: config.sentences,
    sourceLength: config.sequenceLength,
    targetLength: config.sequenceLength,
    sourceVocabulary: config.sourceVocabulary,
    targetVocabulary: config.targetVocabulary,
    dModel: config.dModel,
    heads: config.heads,
    headDim: config.headDim,
    hidden: config.hidden,
    layers: half,
    experts: config.experts,
    cores: config.cores,
    groupSize: config.groupSize,
    gate: { capacity: config.capacity },
  });
  const grads = built.grads!;
  const plan = partition(built.graph, topology, { outputs: [built.loss, ...grads] });
  const optimizer = adafactor();
  const budget = hw.hbmBytesPerCore;
  const estimate = plan.estimateTrainingPeak(optimizer, built.params, grads);
  const full = plan.rematerialisable(built.loss, built.checkpoints);
  let remat: "none" | "full" = policy === "full" || (policy === "auto" && estimate > budget)
    ? "full"
    : "none";
  const buildSeconds = (performance.now() - t0) / 1000;
  const tRun = performance.now();
  const run = (plan_: RematPlan | undefined) =>
    plan.train(undefined, { optimizer, params: built.params, grads, step: 1, remat: plan_ });
  let step = run(remat === "full" ? full : undefined);
  if (step.result.status === "out_of_memory" && policy === "auto" && remat === "none") {
    // The estimate leaves temporaries out: it fitted on paper but not on the cores.
    remat = "full";
    step = run(full);
  }
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
