/**
 * The SPMD partitioner: from a graph with a few annotated tensors, one program that every core
 * runs on its own tiles, with the collectives inserted. Shardings propagate forward from the
 * annotated tensors (unannotated sources are replicated, or take the sharding their element-wise
 * partner has), gradients included since they are graph nodes too. Each op is then planned:
 * - einsum: batch dims sharded alike -> local einsum; a contracting dim sharded -> local partial
 *   einsum + AllReduce; output wanted on another dim -> local einsum + AllToAll; operands
 *   sharded on different free dims -> AllGather one operand + local einsum;
 * - element-wise ops: operands brought to the output's tiling (a free local slice from a
 *   replicated operand);
 * - reductions over split dims: local partial reduction + AllReduce;
 * - everything else: operands gathered whole, the op runs on every core (always correct, and
 *   named in the report so that it can be taught a rule).
 * Uneven dims are padded (every tile has the same shape) and every op runs on its tile's valid
 * box only, with the padding kept at zero, so padding never reaches a result.
 *
 * @module
 */

import type { CoreHandle, Program, ProgramGenerator } from "../actors/program.ts";
import { type RunOptions, runProgram, type RunResult } from "../actors/runtime.ts";
import { type CollectivePlan, planCollective } from "../collectives/plan.ts";
import { OptionsError, ShapeError } from "../errors.ts";
import { formatBytes } from "../actors/memory_ledger.ts";
import { applyOptimizer, type Optimizer, type OptimizerState } from "./optimizers.ts";
import { planGradientReduce, runGradientReduce } from "./gradient_reduce.ts";
import {
  assemble,
  buildProgram,
  estimatePeakBytes,
  type ProgramOptions,
  type RematPlan,
} from "./spmd_program.ts";
import type { Topology } from "../topology/topology.ts";
import { type Annotation, resolveAnnotation } from "./annotate.ts";
import type { Feeds, Node, SourceAttrs } from "./graph.ts";
import { extract, insert } from "./ndarray.ts";
import {
  type InsertedCollective,
  partitionerAlgorithm,
  planReshard,
  reshardCollectives,
  type ReshardStep,
  runReshard,
} from "./reshard.ts";
import { BYTES_PER_ELEMENT, type Shape, sizeOf } from "./shape.ts";
import { Sharding } from "./sharding.ts";

/** How the partitioner runs one node. */
export interface PartitionStep {
  /** The node. */
  readonly node: Node;
  /** The strategy, in words. */
  readonly strategy: string;
  /** The sharding each operand is brought to before the local op. */
  readonly operands: readonly Sharding[];
  /** The sharding of the node's value after the step. */
  readonly output: Sharding;
  /** The collectives the step inserts. */
  readonly collectives: readonly InsertedCollective[];
  /** Operand reshards (one list per operand). */
  readonly reshards: readonly (readonly ReshardStep[])[];
  /** Operands whose retiled tile an earlier step already made (no collective here). */
  readonly reused?: readonly boolean[];
  /** Operands whose retiled tile later steps reuse (kept until the last of them). */
  readonly kept?: readonly boolean[];
  /** Operands whose kept retiled tile this step uses for the last time (freed after it). */
  readonly release?: readonly boolean[];
  /** The sharding the local op produces (before `after`). */
  readonly local: Sharding;
  /** AllReduce of partial results after the local op, if any. */
  readonly reduce?: CollectivePlan;
  /** Reshard of the result to the node's annotated sharding. */
  readonly after: readonly ReshardStep[];
  /** The CollectivePermute loop of an einsum, if it uses one. */
  readonly loop?: PermuteLoop;
  /** "mean": the local mean is rescaled by local count / whole count before the AllReduce. */
  readonly scaleBy?: "mean";
}

/** What {@linkcode PartitionedGraph.train} returns. */
export interface TrainStepResult {
  /** The run (its status, per-core reports and ledgers). */
  readonly result: RunResult;
  /** Numeric mode: each output node's whole value. */
  readonly values: Map<Node, Float32Array>;
  /** Numeric mode: each updated parameter, whole. */
  readonly params: Map<Node, Float32Array>;
  /** Each step's simulated seconds (the slowest core's). */
  readonly stepSeconds: Map<Node, number>;
  /** Of each step's seconds, those of its own compute (the rest is its collectives). */
  readonly computeSeconds: Map<Node, number>;
  /** Simulated seconds of the combined gradient AllReduce (the slowest core's). */
  readonly allReduceSeconds: number;
  /** Simulated seconds spent recomputing dropped activations (the slowest core's). */
  readonly recomputeSeconds: number;
  /**
   * Core 0's step, piece by piece: each node's seconds and its own compute's, the combined
   * gradient AllReduce, the recomputation and the optimizer update. They add up to core 0's
   * clock (allocations take no time), which in an SPMD step is the step time.
   */
  readonly timeline: {
    readonly steps: ReadonlyMap<Node, { readonly seconds: number; readonly compute: number }>;
    readonly allReduceSeconds: number;
    readonly recomputeSeconds: number;
    /** The gradients' retiling and the optimizer update. */
    readonly optimizerSeconds: number;
  };
  /** Combined gradient AllReduces run (one per replica-group set). */
  readonly gradientAllReduces: number;
}

/** An einsum computed block by block while one operand's tiles travel around a ring. */
export interface PermuteLoop {
  /** Which operand travels (0 or 1). */
  readonly operand: number;
  /** Its split dim. */
  readonly dim: number;
  /** The output dim of that dim's letter. */
  readonly outDim: number;
  /** Tiles (steps). */
  readonly n: number;
  /** The permute that passes each tile one place back around its group. */
  readonly permute: CollectivePlan;
}

/** Options of {@linkcode partition}. */
export interface PartitionOptions {
  /** Nodes whose values {@linkcode PartitionedGraph.run} returns. Default: every node. */
  readonly outputs?: readonly Node[];
  /**
   * Einsum operands split on different free dims: gather one operand whole ("all-gather"), or
   * keep both split and pass one around a ring of CollectivePermutes, computing one block of the
   * output per step ("collective-permute": the gathered operand never exists). "auto" (the
   * default) loops when gathering would need more than `gatherLimitBytes` per core.
   */
  readonly freeDims?: "auto" | "all-gather" | "collective-permute";
  /** Per-core bytes above which "auto" loops instead of gathering. Default: 1/4 of HBM. */
  readonly gatherLimitBytes?: number;
}

const ELEMENTWISE = new Set([
  "add",
  "sub",
  "mul",
  "scale",
  "relu",
  "gelu",
  "relu_grad",
  "gelu_grad",
  "dropout",
]);
const SOURCES = new Set(["input", "param", "constant"]);

/** Letters of an einsum equation: one string per operand, and the output's. */
function einsumLetters(equation: string): { inputs: string[]; output: string } {
  const [lhs, output] = equation.replace(/\s+/g, "").split("->");
  return { inputs: lhs.split(","), output };
}

/**
 * A partitioned graph: the plan of every node, a readable report, and the program that runs it
 * on the core actors.
 */
export class PartitionedGraph {
  /** The topology the plan is for. */
  readonly topology: Topology;
  /** One step per node, in graph order. */
  readonly steps: readonly PartitionStep[];
  /** Each node's final sharding. */
  readonly shardings: ReadonlyMap<Node, Sharding>;
  readonly #outputs: readonly Node[];
  /** What the outputs depend on: only these steps run (a gradient nothing uses costs nothing). */
  readonly #needed = new Set<Node>();
  /** Optimizer state by core and parameter, kept between training steps. */
  readonly #optimizerStates = new Map<string, OptimizerState>();

  /** Use {@linkcode partition}. */
  constructor(topology: Topology, steps: PartitionStep[], outputs: readonly Node[]) {
    this.topology = topology;
    this.steps = steps;
    this.shardings = new Map(steps.map((s) => [s.node, s.output]));
    this.#outputs = outputs;
    for (const node of outputs) this.#needed.add(node);
    for (let i = steps.length - 1; i >= 0; i--) {
      if (this.#needed.has(steps[i].node)) {
        for (const x of steps[i].node.inputs) this.#needed.add(x);
      }
    }
  }

  /**
   * The forward activations a rematerialising training step may drop and recompute: the
   * forward nodes (those up to `lastForward`, the loss) that run, other than sources and
   * `checkpoints`, whose step is a local op (no collective is run twice, no retiled operand is
   * shared).
   */
  rematerialisable(lastForward: Node, checkpoints: readonly Node[]): RematPlan {
    const kept = new Set(checkpoints);
    const recompute = new Set<Node>();
    for (const step of this.steps) {
      const { node } = step;
      if (node.id > lastForward.id || !this.#needed.has(node) || kept.has(node)) continue;
      if (SOURCES.has(node.op.kind) || step.collectives.length > 0 || step.loop) continue;
      if (step.reused?.some(Boolean) || step.kept?.some(Boolean)) continue;
      recompute.add(node);
    }
    return { recompute, backwardFrom: lastForward.id + 1 };
  }

  /**
   * The peak bytes per core a training step of `params` with `optimizer` will need, from the
   * schedule alone (resident parameters and optimizer state, and the tiles live at once;
   * retiled temporaries and the tiles a recomputation brings back are left out, so it can be
   * low by those): what a rematerialisation policy decides on.
   */
  estimateTrainingPeak(
    optimizer: Optimizer,
    params: readonly Node[],
    grads: readonly Node[],
    remat?: RematPlan,
  ): number {
    const state = params.reduce(
      (n, p) => n + optimizer.stateBytes(this.shardings.get(p)!.box(p.shape, 0).size, p.dtype),
      0,
    );
    return estimatePeakBytes(this.steps, this.#needed, this.#outputs, {
      gradients: new Set(grads),
      remat,
      finish: { keep: [...params, ...grads], run: function* () {} },
    }, state);
  }

  /** Whether `node`'s step runs: the outputs depend on it. */
  runs(node: Node): boolean {
    return this.#needed.has(node);
  }

  /** Every inserted collective of the steps that run, in program order. */
  get collectives(): InsertedCollective[] {
    return this.steps.filter((s) => this.#needed.has(s.node)).flatMap((s) => s.collectives);
  }

  /** One line per node: operand shardings, strategy, collectives and their bytes. */
  report(): string {
    return this.steps
      .filter((s) => this.#needed.has(s.node))
      .filter((s) => !SOURCES.has(s.node.op.kind) || s.collectives.length > 0)
      .map((s) => {
        const operands = s.operands.map((o) => o.toString()).join(", ");
        // Identical collectives in a row (a permute loop's steps) are listed once with a count.
        const colls: string[] = [];
        let last = "";
        let count = 0;
        for (const c of [...s.collectives, undefined]) {
          const text = c && `${c.kind} of ${formatBytes(c.bytes)} in groups of ${c.groupSize}`;
          if (text === last) {
            count++;
            continue;
          }
          if (last) colls.push(count > 1 ? `${count} x ${last}` : last);
          [last, count] = [text ?? "", 1];
        }
        return `${s.node}: ${s.node.op.kind}(${operands}) -> ${s.output}; ${s.strategy}` +
          (colls.length > 0 ? ` [${colls.join(", ")}]` : "");
      })
      .join("\n");
  }

  /**
   * The SPMD program: every core runs every step on its tiles. With `options.feeds` it is
   * numeric (each core slices its tiles of the fed inputs and parameters); without, shape-only.
   * `options.sink` receives each core's padded tile of the output nodes.
   */
  program(options: ProgramOptions = {}): Program {
    return buildProgram(this.steps, this.#needed, this.#outputs, options);
  }

  /**
   * One training step: runs the program, then on every core applies `optimizer` to its tiles of
   * `params` with its tiles of `grads` (retiled to the parameter's tiling if they differ), each on
   * its valid box, charging the update's time to the core. Parameters and the optimizer state
   * (category "optimizer") are resident for the whole step; gradients are charged as gradients.
   * The gradients of replicated weights are all-reduced together at the end of the backward pass
   * (one AllReduce per replica-group set, not one per gradient). `remat` drops forward
   * activations after their last forward use and recomputes them when the backward pass needs
   * them. The optimizer state lives in this object from step to step. Returns the run and, in
   * numeric mode, the outputs and the updated parameters (whole).
   *
   * @example
   * ```ts
   * import { adam, einsum, grad, Graph, mul, partition, sliceTopology, split, sum } from "@podsim/podsim";
   * const g = new Graph();
   * const x = split(g.input("x", [8, 2]), 0, 8);
   * const w = g.param("w", [2, 1]);
   * const y = einsum("bm,mh->bh", x, w);
   * const loss = sum(mul(y, y));
   * const [dw] = grad(loss, [w]);
   * const plan = partition(g, sliceTopology("v3-8"), { outputs: [loss, dw] });
   * const step = plan.train({ x: new Float32Array(16).fill(1), w: Float32Array.of(1, 1) }, {
   *   optimizer: adam({ learningRate: 0.1 }), params: [w], grads: [dw], step: 1,
   * });
   * console.log(step.params.get(w)); // Float32Array(2) [0.9, 0.9]
   * ```
   */
  train(
    feeds: Feeds | undefined,
    training: {
      readonly optimizer: Optimizer;
      readonly params: readonly Node[];
      readonly grads: readonly Node[];
      readonly step: number;
      /** Forward activations to recompute in the backward pass. */
      readonly remat?: RematPlan;
    },
    options: RunOptions = {},
  ): TrainStepResult {
    const { optimizer, params, grads, step } = training;
    if (params.length !== grads.length) {
      throw new OptionsError(`train: ${params.length} params but ${grads.length} gradients`);
    }
    params.forEach((p, i) => {
      const d = grads[i];
      if ((p.attrs as Partial<SourceAttrs> | null)?.source !== "param") {
        throw new OptionsError(`train: ${p} is not a parameter of the graph`);
      }
      if (!this.#needed.has(d)) {
        throw new OptionsError(`train: the gradient ${d} is not an output of the partition`);
      }
      if (p.shape.join() !== d.shape.join()) {
        throw new ShapeError(`train: ${p} and its gradient ${d} differ in shape`);
      }
    });
    const numeric = feeds !== undefined;
    const states = this.#optimizerStates;
    const shardings = this.shardings;
    const topology = this.topology;
    const retile = params.map((p, i) =>
      planReshard(topology, p.shape, p.dtype, shardings.get(grads[i])!, shardings.get(p)!)
    );
    const keep = [...params, ...grads];
    const reduce = planGradientReduce(
      topology,
      this.steps,
      this.#needed,
      new Set([...this.#outputs, ...keep]),
      grads,
    );
    const stateBytes = (core: CoreHandle) =>
      params.reduce(
        (n, p) => n + optimizer.stateBytes(shardings.get(p)!.box(p.shape, core.id).size, p.dtype),
        0,
      );
    const updated = new Map<Node, (Float32Array | undefined)[]>();
    let allReduceSeconds = 0;
    const timeline = {
      steps: new Map<Node, { seconds: number; compute: number }>(),
      allReduceSeconds: 0,
      recomputeSeconds: 0,
      optimizerSeconds: 0,
    };
    const finish = {
      keep,
      *start(core: CoreHandle): ProgramGenerator {
        yield* core.alloc(stateBytes(core), "optimizer", "optimizer state");
      },
      *run(core: CoreHandle, tiles: Map<Node, Float32Array | undefined>): ProgramGenerator {
        const reduced = yield* runGradientReduce(core, reduce, tiles);
        allReduceSeconds = Math.max(allReduceSeconds, reduced);
        if (core.id === 0) timeline.allReduceSeconds = reduced;
        const updateStart = core.now();
        const local = params.map((p) => shardings.get(p)!.box(p.shape, core.id).size);
        const slots = [];
        for (const [i, p] of params.entries()) {
          const g = yield* runReshard(core, retile[i], p.shape, p.dtype, tiles.get(grads[i]));
          const key = `${core.id}|${p.id}`;
          let state = states.get(key);
          if (state === undefined || state.numeric !== numeric) {
            states.set(key, state = optimizer.init(local[i], numeric));
          }
          const tileShape = shardings.get(p)!.localShape(p.shape);
          const zero = local[i].map(() => 0);
          const tile = tiles.get(p);
          slots.push({
            name: p.name,
            shape: local[i],
            dtype: p.dtype,
            data: tile && extract(tile, tileShape, zero, local[i]),
            grad: g && extract(g, tileShape, zero, local[i]),
            state,
          });
        }
        yield* applyOptimizer(core, optimizer, slots, step);
        for (const [i, p] of params.entries()) {
          const data = slots[i].data;
          if (data === undefined) continue;
          const tileShape = shardings.get(p)!.localShape(p.shape);
          const tile = new Float32Array(sizeOf(tileShape));
          insert(tile, tileShape, data, local[i].map(() => 0), local[i]);
          let list = updated.get(p);
          if (!list) updated.set(p, list = []);
          list[core.id] = tile;
        }
        if (core.id === 0) timeline.optimizerSeconds = core.now() - updateStart;
      },
    };
    const parts = new Map<Node, (Float32Array | undefined)[]>();
    const stepSeconds = new Map<Node, number>();
    const computeSeconds = new Map<Node, number>();
    const recomputeByCore = new Float64Array(topology.coreCount);
    const program = this.program({
      feeds,
      sink: (core, node, tile) => {
        let list = parts.get(node);
        if (!list) parts.set(node, list = []);
        list[core] = tile;
      },
      timing: (core, node, seconds, compute) => {
        stepSeconds.set(node, Math.max(stepSeconds.get(node) ?? 0, seconds));
        computeSeconds.set(node, Math.max(computeSeconds.get(node) ?? 0, compute));
        if (core === 0) timeline.steps.set(node, { seconds, compute });
      },
      recomputeTiming: (core, _node, seconds) => {
        recomputeByCore[core] += seconds;
      },
      deferReduce: reduce.deferred,
      gradients: new Set(grads),
      remat: training.remat,
      finish,
    });
    const result = runProgram(this.topology, program, options);
    const values = new Map<Node, Float32Array>();
    const newParams = new Map<Node, Float32Array>();
    if (numeric && result.status === "completed") {
      for (const node of this.#outputs) {
        values.set(node, assemble(node, shardings.get(node)!, parts.get(node)!));
      }
      for (const [p, list] of updated) newParams.set(p, assemble(p, shardings.get(p)!, list));
    }
    return {
      result,
      values,
      params: newParams,
      stepSeconds,
      computeSeconds,
      allReduceSeconds,
      recomputeSeconds: Math.max(0, ...recomputeByCore),
      timeline: { ...timeline, recomputeSeconds: recomputeByCore[0] ?? 0 },
      gradientAllReduces: reduce.buckets.length,
    };
  }

  /**
   * Runs the program on the topology's core actors and returns the run, in numeric mode the
   * whole value of each output node (assembled from the tiles), and each step's simulated time
   * (the slowest core's).
   */
  run(
    feeds?: Feeds,
    options: RunOptions = {},
  ): { result: RunResult; values: Map<Node, Float32Array>; stepSeconds: Map<Node, number> } {
    const parts = new Map<Node, (Float32Array | undefined)[]>();
    // Each step's simulated time: the slowest core's (steps end in collectives or not; a core
    // that waits in one is counted to the end of its wait).
    const stepSeconds = new Map<Node, number>();
    const program = this.program({
      feeds,
      sink: (core, node, tile) => {
        let list = parts.get(node);
        if (!list) parts.set(node, list = []);
        list[core] = tile;
      },
      timing: (_core, node, seconds) =>
        stepSeconds.set(node, Math.max(stepSeconds.get(node) ?? 0, seconds)),
    });
    const result = runProgram(this.topology, program, options);
    const values = new Map<Node, Float32Array>();
    if (feeds && result.status === "completed") {
      for (const [node, list] of parts) {
        values.set(node, assemble(node, this.shardings.get(node)!, list));
      }
    }
    return { result, values, stepSeconds };
  }
}

/**
 * Partitions an annotated graph for a topology's cores. Throws a ShapeError naming the tensor
 * when an annotation does not fit the devices.
 *
 * @example
 * ```ts
 * import { einsum, Graph, partition, sliceTopology, split } from "@podsim/podsim";
 * const g = new Graph();
 * const x = split(g.input("x", [8, 4]), 0, 8); // batch over the 8 cores
 * const w = g.param("w", [4, 2]);
 * einsum("bm,mh->bh", x, w);
 * const plan = partition(g, sliceTopology("v3-8"));
 * console.log(plan.report()); // einsum[8, 2]: ... local einsum (batch dims sharded alike)
 * ```
 */
export function partition(
  graph: Node["graph"],
  topology: Topology,
  options: PartitionOptions = {},
): PartitionedGraph {
  const devices = topology.coreCount;
  const freeDims = options.freeDims ?? "auto";
  if (!["auto", "all-gather", "collective-permute"].includes(freeDims)) {
    throw new OptionsError(
      `partition: freeDims must be "auto", "all-gather" or "collective-permute", got ${
        JSON.stringify(freeDims)
      }`,
    );
  }
  const limit = options.gatherLimitBytes;
  if (limit !== undefined && !(limit > 0)) {
    throw new OptionsError(
      `partition: gatherLimitBytes must be a positive number of bytes, got ${limit}`,
    );
  }
  const outputs = options.outputs ?? graph.nodes;
  for (const o of outputs) {
    if (o.graph !== graph) {
      throw new OptionsError(`partition: output ${o} belongs to another graph`);
    }
  }
  // What the outputs depend on: only these nodes run, and only they share retiled operands.
  const needed = new Set<Node>(outputs);
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    if (needed.has(graph.nodes[i])) { for (const x of graph.nodes[i].inputs) needed.add(x); }
  }
  const annotated = new Map<Node, Sharding>();
  for (const [node, a] of graph.annotations) {
    annotated.set(node, resolveAnnotation(node, a as Annotation, devices));
  }
  // Pass 1 propagates with unannotated sources replicated; pass 2 gives such a source the
  // tiling of its element-wise partner, where one exists (free: a replicated source is sliced).
  let steps = planAll(graph.nodes, topology, annotated, new Map(), options, needed);
  const hints = new Map<Node, Sharding>();
  for (const step of steps) {
    const { node } = step;
    if (!ELEMENTWISE.has(node.op.kind) || node.inputs.length !== 2) continue;
    const [a, b] = node.inputs;
    for (const [x, y] of [[a, b], [b, a]]) {
      if (
        SOURCES.has(x.op.kind) && !annotated.has(x) && !hints.has(x) &&
        equalShapes(x.shape, y.shape)
      ) {
        const other = steps[y.id].output;
        if (!other.isReplicated) hints.set(x, other);
      }
    }
  }
  // Backward: an annotated result asks its producers for the tiling it needs; an unannotated
  // source reached that way (through element-wise ops and einsums) takes it.
  for (const [x, s] of backwardHints(graph.nodes, annotated, devices, needed)) {
    if (!annotated.has(x) && !hints.has(x) && SOURCES.has(x.op.kind)) hints.set(x, s);
  }
  if (hints.size > 0) steps = planAll(graph.nodes, topology, annotated, hints, options, needed);
  return new PartitionedGraph(topology, steps, outputs);
}

/**
 * The tilings annotated results want of the nodes they are computed from: an element-wise op
 * passes its wish to same-shaped operands; an einsum to each operand, for the letters it shares
 * with the output. An op with an annotated operand passes nothing (the forward pass decides
 * it). Walks the graph backwards once; the first wish for a node wins.
 */
function backwardHints(
  nodes: readonly Node[],
  annotated: ReadonlyMap<Node, Sharding>,
  devices: number,
  needed: ReadonlySet<Node>,
): Map<Node, Sharding> {
  const wish = new Map<Node, Sharding>([...annotated].filter(([n]) => needed.has(n)));
  // A node with several consumers takes a wish only if every consumer that runs wishes it.
  const consumers = new Map<Node, number>();
  for (const n of nodes) {
    if (needed.has(n)) {
      for (const x of new Set(n.inputs)) consumers.set(x, (consumers.get(x) ?? 0) + 1);
    }
  }
  const votes = new Map<Node, { key: string; count: number; sharding: Sharding }>();
  const vote = (x: Node, s: Sharding) => {
    const v = votes.get(x);
    if (v === undefined) votes.set(x, { key: s.key, count: 1, sharding: s });
    else if (v.key === s.key) v.count++;
    else v.count = -Infinity; // consumers disagree: no wish
    const w = votes.get(x)!;
    if (w.count === consumers.get(x)) wish.set(x, w.sharding);
  };
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (!needed.has(node)) continue;
    const want = wish.get(node);
    if (want === undefined || want.isReplicated) continue;
    // An op with an annotated operand already has its tiling from the forward pass.
    if (node.inputs.some((x) => annotated.has(x))) continue;
    if (ELEMENTWISE.has(node.op.kind)) {
      for (const x of new Set(node.inputs)) {
        if (!wish.has(x) && equalShapes(x.shape, node.shape)) vote(x, want);
      }
    } else if (node.op.kind === "einsum") {
      const { inputs, output } = einsumLetters((node.attrs as { equation: string }).equation);
      node.inputs.forEach((x, k) => {
        if (wish.has(x)) return;
        const s = Sharding.compose(
          devices,
          [...inputs[k]].map((l) => {
            const d = output.indexOf(l);
            return d >= 0 && want.tiles[d] > 1 ? [want, d] as [Sharding, number] : undefined;
          }),
        );
        if (s !== undefined && !s.isReplicated) vote(x, s);
      });
    }
  }
  return wish;
}

function equalShapes(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function planAll(
  nodes: readonly Node[],
  topology: Topology,
  annotated: ReadonlyMap<Node, Sharding>,
  hints: ReadonlyMap<Node, Sharding>,
  options: PartitionOptions,
  needed: ReadonlySet<Node>,
): PartitionStep[] {
  const devices = topology.coreCount;
  const steps: PartitionStep[] = [];
  const shardingOf = (x: Node) => steps[x.id].output;
  const retiled = new Map<string, [number, number]>(); // node|sharding -> [step, operand]
  const keepers = new Set<string>(); // "step|operand" whose retiled tile is reused later
  const lastReuse = new Map<string, [number, number]>(); // node|sharding -> last reusing step
  for (const node of nodes) {
    if (SOURCES.has(node.op.kind)) {
      const s = annotated.get(node) ?? hints.get(node) ?? Sharding.replicated(node.rank, devices);
      steps.push({
        node,
        strategy: annotated.has(node)
          ? "annotated"
          : hints.has(node)
          ? "from its partner"
          : "replicated",
        operands: [],
        output: s,
        collectives: [],
        reshards: [],
        local: s,
        after: [],
      });
      continue;
    }
    const planned = planOp(node, topology, node.inputs.map(shardingOf), options);
    // An operand another step already retiled the same way is reused, not resharded again.
    const reused = node.inputs.map((x, i) => {
      if (planned.reshards[i].length === 0 || !needed.has(node)) return false;
      const key = `${x.id}|${planned.operands[i].key}`;
      const first = retiled.get(key);
      if (first === undefined) {
        retiled.set(key, [steps.length, i]);
        return false;
      }
      keepers.add(`${first[0]}|${first[1]}`);
      lastReuse.set(key, [steps.length, i]);
      return true;
    });
    const plan = { ...planned, reshards: planned.reshards.map((r, i) => (reused[i] ? [] : r)) };
    const target = annotated.get(node);
    const after = target ? planReshard(topology, node.shape, node.dtype, plan.local, target) : [];
    const collectives = [
      ...plan.reshards.flatMap((r, i) =>
        reshardCollectives(r, node.inputs[i].dtype, `operand ${i}`)
      ),
      ...(plan.loop
        ? Array.from({ length: plan.loop.n - 1 }, () => ({
          kind: "collective-permute",
          bytes: plan.loop!.permute.length *
            BYTES_PER_ELEMENT[node.inputs[plan.loop!.operand].dtype],
          groupSize: 2,
          why: "the travelling operand's next tile",
        }))
        : []),
      ...(plan.reduce
        ? [{
          kind: "all-reduce",
          bytes: plan.reduce.length * BYTES_PER_ELEMENT[node.dtype],
          groupSize: plan.reduce.groups[0].length,
          why: "partial results",
        }]
        : []),
      ...reshardCollectives(after, node.dtype, "to the annotated sharding"),
    ];
    const strategy = after.some((s) => s.kind === "all-to-all")
      ? `${plan.strategy} + AllToAll to the annotated sharding`
      : after.length > 0
      ? `${plan.strategy} + reshard to the annotated sharding`
      : plan.strategy;
    steps.push({
      node,
      ...plan,
      strategy,
      output: target ?? plan.local,
      collectives,
      after,
      reused,
    });
  }
  const releasers = new Set([...lastReuse.values()].map(([i, j]) => `${i}|${j}`));
  return steps.map((step, i) => {
    const flags = (set: Set<string>) => step.node.inputs.map((_, j) => set.has(`${i}|${j}`));
    const kept = flags(keepers);
    const release = flags(releasers);
    return kept.some(Boolean) || release.some(Boolean) ? { ...step, kept, release } : step;
  });
}

interface OpPlan {
  readonly strategy: string;
  readonly operands: Sharding[];
  readonly reshards: ReshardStep[][];
  readonly local: Sharding;
  readonly reduce?: CollectivePlan;
  readonly loop?: PermuteLoop;
  /** "mean": the local mean is rescaled by local count / whole count before the AllReduce. */
  readonly scaleBy?: "mean";
}

function planOp(
  node: Node,
  topology: Topology,
  inputs: readonly Sharding[],
  options: PartitionOptions,
): OpPlan {
  const devices = topology.coreCount;
  const bring = (targets: Sharding[]) =>
    targets.map((t, i) =>
      planReshard(topology, node.inputs[i].shape, node.inputs[i].dtype, inputs[i], t)
    );
  const kind = node.op.kind;
  if (kind === "einsum" && node.inputs.length === 2) {
    return planEinsum(node, topology, inputs, options);
  }
  if (ELEMENTWISE.has(kind)) {
    // The output keeps the tiling of the first full-shape operand that is split (a replicated
    // partner is sliced for free); with none split, the first operand's.
    const full = node.inputs.map((x, i) => (equalShapes(x.shape, node.shape) ? i : -1)).filter((
      i,
    ) => i >= 0);
    const out = inputs[full.find((i) => !inputs[i].isReplicated) ?? 0];
    // A suffix-shaped second operand (a bias, a scale) takes the matching dims' tiling.
    const targets = node.inputs.map((x) => {
      if (equalShapes(x.shape, node.shape)) return out;
      const lead = node.rank - x.rank;
      return Sharding.compose(
        devices,
        x.shape.map((_, d) => [out, lead + d] as [Sharding, number]),
      ) ??
        Sharding.replicated(x.rank, devices);
    });
    const reshards = bring(targets);
    const moved = reshards.some((r) => r.length > 0);
    return {
      strategy: moved ? "element-wise, operands brought to one tiling" : "element-wise, local",
      operands: targets,
      reshards,
      local: out,
    };
  }
  const ruled = planByRule(node, topology, inputs, bring);
  if (ruled) return ruled;
  // Fallback: every operand whole on every core, the op runs everywhere.
  const targets = node.inputs.map((x) => Sharding.replicated(x.rank, devices));
  const reshards = bring(targets);
  return {
    strategy: reshards.some((r) => r.length > 0)
      ? "operands gathered, runs whole on every core (no sharding rule)"
      : "runs whole on every core (replicated operands)",
    operands: targets,
    reshards,
    local: Sharding.replicated(node.rank, devices),
  };
}

/** Ops that mix values along `attrs.axis` and keep every other dim element-wise. */
const ALONG_AXIS = new Set([
  "softmax",
  "log_softmax",
  "softmax_grad",
  "log_softmax_grad",
  "cumsum",
  "top_k",
  "take_along_axis",
  "scatter_along_axis",
  "argmax",
]);
/** Ops that mix along the last dim of their first operand (norms), params of shape [last]. */
const LAST_DIM = new Set(["rms_norm", "layer_norm", "rms_norm_grad", "layer_norm_grad"]);

/** The sharding of the dims of `s` other than `dims` (those removed from the shape). */
function dropDims(s: Sharding, dims: readonly number[]): Sharding {
  const kept = s.tiles.map((_, d) => d).filter((d) => !dims.includes(d));
  return Sharding.compose(
    s.devices,
    kept.map((d) => (s.tiles[d] > 1 ? [s, d] as [Sharding, number] : undefined)),
  )!;
}

/** `s` with extra unsplit dims appended (a one-hot's depth, an embedding's width). */
function appendDims(s: Sharding, extra: number): Sharding {
  return new Sharding([...s.tiles, ...new Array(extra).fill(1)], s.tileOf);
}

/**
 * Partial results summed (or maxed) over the split dims `dims` of `s`: the AllReduce that
 * completes them, over groups holding one slice each of one output tile.
 */
function partialReduce(
  node: Node,
  topology: Topology,
  local: Sharding,
  s: Sharding,
  dims: readonly number[],
  reduction: "sum" | "max",
): CollectivePlan | undefined {
  const split = dims.filter((d) => s.tiles[d] > 1);
  if (split.length === 0) return undefined;
  const slice = (device: number) => {
    const c = s.coords(device);
    return split.map((d) => c[d]).join(",");
  };
  const slices = split.reduce((n, d) => n * s.tiles[d], 1);
  const groups = reduceGroups(local, topology.coreCount, slice);
  if (groups.some((g) => g.length !== slices)) return undefined;
  return planCollective(topology, {
    kind: "all-reduce",
    length: sizeOf(local.localShape(node.shape)),
    group: groups,
    dtype: node.dtype,
    reduction,
    algorithm: partitionerAlgorithm(groups),
  });
}

/** The plans of the ops with a sharding rule other than einsum and element-wise ones. */
function planByRule(
  node: Node,
  topology: Topology,
  inputs: readonly Sharding[],
  bring: (targets: Sharding[]) => ReshardStep[][],
): OpPlan | undefined {
  const kind = node.op.kind;
  const devices = topology.coreCount;
  const attrs = node.attrs as Record<string, unknown>;
  const plan = (
    strategy: string,
    targets: Sharding[],
    local: Sharding,
    reduce?: CollectivePlan,
    scaleBy?: "mean",
  ) => {
    const reshards = bring(targets);
    const moved = reshards.some((r) => r.length > 0);
    return {
      strategy: strategy + (moved ? ", operands retiled" : "") +
        (reduce ? " + AllReduce of partial results" : ""),
      operands: targets,
      reshards,
      local,
      reduce,
      ...(scaleBy ? { scaleBy } : {}),
    };
  };
  if (kind === "fill") {
    return plan("fills its own tile", [], Sharding.replicated(node.rank, devices));
  }
  if (kind === "einsum" && node.inputs.length === 1) {
    // A permute and/or a sum over letters: kept letters keep their splits, summed split
    // letters leave partial sums.
    const { inputs: [letters], output } = einsumLetters((attrs as { equation: string }).equation);
    const s = inputs[0];
    const local = Sharding.compose(
      devices,
      [...output].map((l) => {
        const d = letters.indexOf(l);
        return s.tiles[d] > 1 ? [s, d] as [Sharding, number] : undefined;
      }),
    );
    if (local === undefined) return undefined;
    const summed = [...letters].flatMap((l, d) => (output.includes(l) ? [] : [d]));
    const reduce = partialReduce(node, topology, local, s, summed, "sum");
    if (reduce === undefined && summed.some((d) => s.tiles[d] > 1)) return undefined;
    return plan("local one-operand einsum", [s], local, reduce);
  }
  if (ALONG_AXIS.has(kind)) {
    // The mixed axis must be whole on every core; other dims stay split.
    const axis = attrs.axis as number;
    const s = inputs[0].without([axis]);
    const targets = node.inputs.map((
      x,
    ) => (x.rank === s.rank ? s : Sharding.replicated(x.rank, devices)));
    const local = node.rank === s.rank ? s : dropDims(s, [axis]);
    return plan(`local ${kind} along whole axis ${axis}`, targets, local);
  }
  if (LAST_DIM.has(kind)) {
    const x = node.inputs[0];
    const s = inputs[0].without([x.rank - 1]);
    const targets = node.inputs.map((
      y,
    ) => (y.rank === x.rank ? s : Sharding.replicated(y.rank, devices)));
    return plan(`local ${kind} along the whole last dim`, targets, s);
  }
  if (kind === "rms_norm_grad_scale" || kind === "layer_norm_grad_scale") {
    const x = node.inputs[0];
    const s = inputs[0].without([x.rank - 1]);
    const local = Sharding.replicated(1, devices);
    const leading = x.shape.map((_, d) => d).slice(0, -1);
    const reduce = partialReduce(node, topology, local, s, leading, "sum");
    if (reduce === undefined && leading.some((d) => s.tiles[d] > 1)) return undefined;
    return plan(`local ${kind}`, [s, s], local, reduce);
  }
  if (kind === "sum" || kind === "max" || kind === "mean" || kind === "sum_leading") {
    const axes = kind === "sum_leading"
      ? Array.from({ length: attrs.lead as number }, (_, d) => d)
      : attrs.axes as number[];
    const s = inputs[0];
    const local = dropDims(s, axes);
    const reduce = partialReduce(node, topology, local, s, axes, kind === "max" ? "max" : "sum");
    if (reduce === undefined && axes.some((d) => s.tiles[d] > 1)) return undefined;
    return plan(
      `local ${kind}`,
      [s],
      local,
      reduce,
      kind === "mean" && reduce ? "mean" : undefined,
    );
  }
  if (kind === "softmax_cross_entropy" || kind === "softmax_cross_entropy_grad") {
    const logits = node.inputs[0];
    const s = inputs[0].without([logits.rank - 1]);
    const lead = dropDims(s, [logits.rank - 1]);
    const targets = node.inputs.map((y) => (y.rank === logits.rank ? s : lead));
    return plan(
      `local ${kind} along the whole vocabulary`,
      targets,
      node.rank === logits.rank ? s : lead,
    );
  }
  if (kind === "one_hot") return plan("local one-hot", [inputs[0]], appendDims(inputs[0], 1));
  if (kind === "embedding") {
    // The table whole along its rows (each core looks up any id), the ids as they are.
    const [table, ids] = inputs;
    const t = table.without([0]);
    const local = Sharding.compose(devices, [
      ...ids.tiles.map((n, d) => (n > 1 ? [ids, d] as [Sharding, number] : undefined)),
      t.tiles[1] > 1 ? [t, 1] as [Sharding, number] : undefined,
    ]);
    if (local === undefined) return undefined;
    return plan("local embedding lookup", [t, ids], local);
  }
  if (kind === "embedding_grad") {
    // Scatter-add of the local gradient rows; partial over the split id dims.
    const [ids, g] = [inputs[0], inputs[1]];
    const gi = node.inputs[1];
    const lead = gi.shape.map((_, d) => d).slice(0, -1);
    const idsTarget = dropDims(g, [gi.rank - 1]);
    const local = Sharding.compose(devices, [
      undefined,
      g.tiles[gi.rank - 1] > 1 ? [g, gi.rank - 1] as [Sharding, number] : undefined,
    ]);
    if (local === undefined) return undefined;
    const reduce = partialReduce(node, topology, local, g, lead, "sum");
    if (reduce === undefined && lead.some((d) => g.tiles[d] > 1)) return undefined;
    void ids;
    return plan("local scatter-add of gradient rows", [idsTarget, g], local, reduce);
  }
  if (node.op.split !== undefined) {
    // Independent along dim 0: every operand keeps only its dim-0 split, like operand 0.
    const lead = inputs[0].without(inputs[0].shardedDims.filter((d) => d !== 0));
    const along = (rank: number) =>
      rank === 0 ? Sharding.replicated(0, devices) : Sharding.compose(
        devices,
        Array.from(
          { length: rank },
          (_, d) => (d === 0 && lead.tiles[0] > 1 ? [lead, 0] as [Sharding, number] : undefined),
        ),
      )!;
    const targets = node.inputs.map((x) => along(x.rank));
    if (node.op.split === "leading-mean") {
      const local = Sharding.replicated(0, devices);
      const reduce = partialReduce(node, topology, local, lead, [0], "sum");
      return plan(`local ${kind} over its groups`, targets, local, reduce);
    }
    return plan(`local ${kind} per group`, targets, along(node.rank));
  }
  if (kind === "reshape") {
    // Dims up to the first that changes size stay as they are (and may stay split); dims after
    // it are regrouped, so they must be whole.
    const x = node.inputs[0];
    // Only the leading dim split, evenly, on both sides: every tile is the same contiguous run
    // of elements before and after (batch [B, T, M] regrouped into MoE groups [G, S, M]).
    const n = inputs[0].tiles[0];
    if (
      n > 1 && inputs[0].shardedDims.length === 1 && x.shape[0] % n === 0 &&
      node.shape[0] % n === 0 && x.shape[0] !== node.shape[0]
    ) {
      const local = new Sharding([n, ...new Array(node.rank - 1).fill(1)], inputs[0].tileOf);
      return plan("local reshape (leading dim regrouped, evenly split)", [inputs[0]], local);
    }
    let prefix = 0;
    while (prefix < Math.min(x.rank, node.rank) && x.shape[prefix] === node.shape[prefix]) prefix++;
    const t = inputs[0].without(inputs[0].shardedDims.filter((d) => d >= prefix));
    const local = Sharding.compose(
      devices,
      node.shape.map((
        _,
        d,
      ) => (d < prefix && t.tiles[d] > 1 ? [t, d] as [Sharding, number] : undefined)),
    );
    if (local === undefined) return undefined;
    return plan("local reshape (split leading dims unchanged)", [t], local);
  }
  if (kind === "transpose") {
    return plan("local transpose", [inputs[0]], inputs[0].permuted(attrs.perm as number[]));
  }
  return undefined;
}

/** Einsum: which letters stay split, what moves, whether partial sums need an AllReduce. */
function planEinsum(
  node: Node,
  topology: Topology,
  inputs: readonly Sharding[],
  options: PartitionOptions,
): OpPlan {
  const devices = topology.coreCount;
  const { inputs: [la, lb], output } = einsumLetters((node.attrs as { equation: string }).equation);
  const [A, B] = node.inputs;
  let [sa, sb] = inputs;
  const split = (s: Sharding, letters: string, l: string) => {
    const d = letters.indexOf(l);
    return d >= 0 && s.tiles[d] > 1 ? d : -1;
  };
  const coordsEqual = (x: Sharding, dx: number, y: Sharding, dy: number) => {
    if (x.tiles[dx] !== y.tiles[dy]) return false;
    const [cx, cy] = [x.coordsAlong(dx), y.coordsAlong(dy)];
    return cx.every((v, i) => v === cy[i]);
  };
  // Letters in both operands (batch or contracting) must be split alike: B follows A, or A
  // follows B where only B is split.
  const shared = [...la].filter((l) => lb.includes(l));
  let strategy = "";
  for (const l of shared) {
    const [da, db] = [split(sa, la, l), split(sb, lb, l)];
    if (da < 0 && db < 0) continue;
    if (da >= 0 && db >= 0 && coordsEqual(sa, da, sb, lb.indexOf(l))) continue;
    if (da >= 0) sb = retile(sb, lb, la, sa, l, devices);
    else sa = retile(sa, la, lb, sb, l, devices);
  }
  // Retiling one letter may have undone another: if any shared letter is still split
  // differently, B takes A's tiling of every shared letter (and keeps none of its own).
  const aligned = () =>
    shared.every((l) => {
      const [da, db] = [split(sa, la, l), split(sb, lb, l)];
      return (da < 0 && db < 0) || (da >= 0 && db >= 0 && coordsEqual(sa, da, sb, db));
    });
  if (!aligned()) {
    sb = Sharding.compose(
      devices,
      [...lb].map((l) => {
        const da = split(sa, la, l);
        return da >= 0 ? [sa, da] as [Sharding, number] : undefined;
      }),
    ) ?? Sharding.replicated(B.rank, devices);
    if (!aligned()) [sa, sb] = [sa.without(sa.shardedDims), Sharding.replicated(B.rank, devices)];
  }
  // The output's tiling: every split letter of the output, taken from the operand carrying it.
  const compose = () =>
    Sharding.compose(
      devices,
      [...output].map((l) => {
        const da = split(sa, la, l);
        if (da >= 0) return [sa, da] as [Sharding, number];
        const db = split(sb, lb, l);
        return db >= 0 ? [sb, db] as [Sharding, number] : undefined;
      }),
    );
  let local = compose();
  // The contracting / summed letters that are split: their partial sums need an AllReduce.
  const reduced = (s: Sharding, letters: string) =>
    [...letters].flatMap((l, d) => (!output.includes(l) && s.tiles[d] > 1 ? [d] : []));
  if (local === undefined || !consistent(local, sa, la, sb, lb, output, devices)) {
    // Operands split on different free dims over the same devices: gather the smaller one's
    // free splits.
    const freeSplits = (s: Sharding, letters: string, other: string) =>
      [...letters].flatMap((l, d) => (s.tiles[d] > 1 && !other.includes(l) ? [d] : []));
    const small = A.bytes <= B.bytes ? 0 : 1;
    const loop = permuteLoop(node, topology, [sa, sb], [la, lb], output, small, options);
    if (loop) return loop;
    if (small === 0) sa = sa.without(freeSplits(sa, la, lb));
    else sb = sb.without(freeSplits(sb, lb, la));
    local = compose();
    strategy = `AllGather ${
      A.bytes <= B.bytes ? A.name : B.name
    } (operands split on different free dims) + `;
    if (local === undefined || !consistent(local, sa, la, sb, lb, output, devices)) {
      sa = Sharding.replicated(A.rank, devices);
      sb = Sharding.replicated(B.rank, devices);
      local = Sharding.replicated(node.rank, devices);
      strategy = "operands gathered whole + ";
    }
  }
  let partialA = reduced(sa, la);
  let partialB = reduced(sb, lb).filter((d) => !la.includes(lb[d]));
  let reduce: CollectivePlan | undefined;
  // Each group: one device per slice of the summed letters, all holding one output tile.
  const groupsFor = () => {
    const slice = (device: number) => {
      const ca = sa.coords(device);
      const cb = sb.coords(device);
      return [...partialA.map((d) => ca[d]), ...partialB.map((d) => cb[d])].join(",");
    };
    const slices = [...partialA.map((d) => sa.tiles[d]), ...partialB.map((d) => sb.tiles[d])]
      .reduce((x, y) => x * y, 1);
    const groups = reduceGroups(local!, devices, slice);
    return groups.some((g) => g.length !== slices) ? undefined : groups;
  };
  if ((partialA.length > 0 || partialB.length > 0) && groupsFor() === undefined) {
    // The summed slices are spread over devices holding different output tiles: gather the
    // summed letters whole instead of summing partial results.
    sa = sa.without(partialA);
    sb = sb.without(reduced(sb, lb)); // B's shared summed letters too: A's are whole now
    partialA = reduced(sa, la);
    partialB = reduced(sb, lb).filter((d) => !la.includes(lb[d]));
    local = compose() ?? Sharding.replicated(node.rank, devices);
    strategy += "AllGather the summed letters + ";
  }
  const reshards = [
    planReshard(topology, A.shape, A.dtype, inputs[0], sa),
    planReshard(topology, B.shape, B.dtype, inputs[1], sb),
  ];
  if (partialA.length > 0 || partialB.length > 0) {
    const groups = groupsFor();
    if (groups === undefined) {
      throw new OptionsError(`partition: ${node}: no device grouping sums its split letters`);
    }
    reduce = planCollective(topology, {
      kind: "all-reduce",
      length: sizeOf(local.localShape(node.shape)),
      group: groups,
      dtype: node.dtype,
      algorithm: partitionerAlgorithm(groups),
    });
    strategy += "local partial einsum + AllReduce (contracting dim sharded)";
  } else if (strategy === "") {
    strategy = shared.some((l) => output.includes(l) && split(sa, la, l) >= 0)
      ? "local einsum (batch dims sharded alike)"
      : "local einsum";
  } else strategy += "local einsum";
  if (reshards.some((r) => r.length > 0) && !strategy.startsWith("AllGather")) {
    strategy += ", operands retiled";
  }
  return { strategy, operands: [sa, sb], reshards, local, reduce };
}

/**
 * The CollectivePermute loop for operands split on different free dims, when asked for (or,
 * with "auto", when gathering the travelling operand would not fit): the travelling operand is
 * split on exactly one free dim, over the same devices (tile for tile) as a free dim of the
 * other; the output keeps the other operand's splits.
 */
function permuteLoop(
  node: Node,
  topology: Topology,
  shardings: readonly Sharding[],
  letters: readonly string[],
  output: string,
  travel: number,
  options: PartitionOptions,
): OpPlan | undefined {
  const mode = options.freeDims ?? "auto";
  if (mode === "all-gather") return undefined;
  const devices = topology.coreCount;
  const [r, k] = [travel, 1 - travel];
  const R = node.inputs[r];
  const rs = shardings[r];
  const ks = shardings[k];
  if (mode === "auto") {
    const limit = options.gatherLimitBytes ?? topology.hardware.hbmBytesPerCore / 4;
    if (R.bytes <= limit) return undefined;
  }
  const split = rs.shardedDims;
  if (split.length !== 1) return undefined;
  const dim = split[0];
  const letter = letters[r][dim];
  if (letters[k].includes(letter) || !output.includes(letter)) return undefined;
  const coords = rs.coordsAlong(dim);
  const partner = ks.shardedDims.find((d) =>
    ks.tiles[d] === rs.tiles[dim] && ks.coordsAlong(d).every((v, i) => v === coords[i]) &&
    !letters[r].includes(letters[k][d])
  );
  if (partner === undefined) return undefined;
  const local = Sharding.compose(
    devices,
    [...output].map((l) => {
      const d = letters[k].indexOf(l);
      return d >= 0 && ks.tiles[d] > 1 ? [ks, d] as [Sharding, number] : undefined;
    }),
  );
  if (local === undefined) return undefined;
  const n = rs.tiles[dim];
  const pairs = rs.groupsAlong([dim]).flatMap((group) =>
    group.map((id, rank) => [id, group[(rank - 1 + n) % n]] as [number, number])
  );
  const permute = planCollective(topology, {
    kind: "collective-permute",
    length: sizeOf(rs.localShape(R.shape)),
    pairs,
    dtype: R.dtype,
  });
  return {
    strategy: `loop of ${n} CollectivePermutes passing ${R.name} around (operands split on ` +
      `different free dims; ${mode === "auto" ? "gathering it would not fit" : "asked for"})`,
    operands: [...shardings],
    reshards: [[], []],
    local,
    loop: { operand: r, dim, outDim: output.indexOf(letter), n, permute },
  };
}

/** `s` (for `letters`) with letter `l` split like it is in `other` (for `otherLetters`). */
function retile(
  s: Sharding,
  letters: string,
  otherLetters: string,
  other: Sharding,
  l: string,
  devices: number,
): Sharding {
  const d = letters.indexOf(l);
  const od = otherLetters.indexOf(l);
  // Keep this operand's other splits where they still form a grid with the new one.
  const sources = [...letters].map((_, i) =>
    i === d
      ? [other, od] as [Sharding, number]
      : s.tiles[i] > 1
      ? [s, i] as [Sharding, number]
      : undefined
  );
  return Sharding.compose(devices, sources) ??
    Sharding.compose(
      devices,
      [...letters].map((_, i) => (i === d ? [other, od] as [Sharding, number] : undefined)),
    )!;
}

/**
 * Whether each device's operand tiles are the pieces its output tile needs: for every output
 * letter split in an operand, the device's coordinate matches the output's.
 */
function consistent(
  out: Sharding,
  sa: Sharding,
  la: string,
  sb: Sharding,
  lb: string,
  output: string,
  devices: number,
): boolean {
  for (let device = 0; device < devices; device++) {
    const oc = out.coords(device);
    for (const [s, letters] of [[sa, la], [sb, lb]] as const) {
      const c = s.coords(device);
      for (let d = 0; d < letters.length; d++) {
        const o = output.indexOf(letters[d]);
        if (o >= 0 && c[d] !== (out.tiles[o] > 1 ? oc[o] : 0) && s.tiles[d] > 1) return false;
      }
    }
  }
  // Each output tile's devices must between them cover each summed slice once per replica.
  return true;
}

/**
 * Devices grouped for summing partial results: by the output tile they hold, then by replica
 * (the n-th device of a tile holding a given slice joins the tile's n-th group).
 */
function reduceGroups(s: Sharding, devices: number, slice: (device: number) => string): number[][] {
  const groups = new Map<string, number[]>();
  const seen = new Map<string, number>();
  for (let d = 0; d < devices; d++) {
    const t = s.tileOf[d];
    const key = `${t}|${slice(d)}`;
    const replica = seen.get(key) ?? 0;
    seen.set(key, replica + 1);
    const g = groups.get(`${t}#${replica}`);
    if (g) g.push(d);
    else groups.set(`${t}#${replica}`, [d]);
  }
  return [...groups.values()];
}
