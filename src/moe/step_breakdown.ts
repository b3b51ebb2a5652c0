/**
 * Where a training step of the MoE Transformer spends its simulated time, by op class: every
 * node's measured seconds split into its own compute and its collectives, each put in a class
 * (attention, dense FFN, expert FFN, the gate's einsums and its cumsum/argmax ops, the dispatch
 * and combine AllToAlls, ...), plus the combined gradient AllReduce, the recomputation and the
 * optimizer update that the training step reports on their own.
 *
 * @module
 */

import type { Node } from "../ops/graph.ts";
import type { PartitionedGraph, TrainStepResult } from "../ops/partition.ts";
import type { TransformerGraph } from "./transformer.ts";

/** The op classes of the breakdown, in report order. */
export const STEP_CLASSES = [
  "attention",
  "dense FFN",
  "expert FFN",
  "gate einsums",
  "cumsum/argmax",
  "dispatch AllToAll",
  "combine AllToAll",
  "gradient AllReduce",
  "other collectives",
  "embedding, norms, loss",
  "optimizer",
  "recompute",
  "core skew",
] as const;

/** One of {@linkcode STEP_CLASSES}. */
export type StepClass = typeof STEP_CLASSES[number];

const isParam = (x: Node) => (x.attrs as { source?: string } | null)?.source === "param";

/** The class of a parameter's consumers, from its name (as buildTransformer names them). */
function paramClass(p: Node): StepClass {
  const n = p.name;
  if (/_(self|cross)_/.test(n)) return "attention";
  if (/_ffn_wg$/.test(n)) return "gate einsums";
  if (/_ffn_w[io]$/.test(n)) return p.rank === 3 ? "expert FFN" : "dense FFN";
  return "embedding, norms, loss";
}

/** The compute class of every node of the model, forward and backward. */
export function classifyNodes(model: TransformerGraph): Map<Node, StepClass> {
  const cls = new Map<Node, StepClass>();
  const { gate, dispatch, combine } = model.phases;
  const masks = new Set<Node>();
  for (const n of gate) {
    // The router logits are an einsum; the gate ops (top-2, cumsum positions, losses) are not.
    const einsum = n.op.kind === "einsum";
    cls.set(n, einsum ? "gate einsums" : "cumsum/argmax");
    if (!einsum) masks.add(n);
  }
  for (const n of dispatch) cls.set(n, "gate einsums");
  for (const n of model.phases["expert FFN"]) cls.set(n, "expert FFN");
  for (const n of combine) {
    cls.set(
      n,
      n.op.kind === "einsum" && n.inputs.length === 2 ? "gate einsums" : "combine AllToAll",
    );
  }
  const lastForward = model.loss.id;
  for (const n of model.graph.nodes) {
    if (cls.has(n) || n.op.kind === "param" || n.op.kind === "input") continue;
    const backward = n.id > lastForward;
    const param = n.inputs.find(isParam);
    if (param) {
      cls.set(n, paramClass(param));
      continue;
    }
    // The backward einsums through the dispatch and combine masks are the gate's einsums too.
    if (backward && n.op.kind === "einsum" && n.inputs.some((x) => masks.has(x))) {
      cls.set(n, "gate einsums");
      continue;
    }
    // Otherwise the class of the latest classed input (in the backward pass, of the forward
    // values it reads: a gradient belongs where its forward op was).
    const from = backward ? n.inputs.filter((x) => x.id <= lastForward) : [];
    const pool = from.length > 0 ? from : n.inputs;
    let best: Node | undefined;
    for (const x of pool) if (cls.has(x) && (!best || x.id > best.id)) best = x;
    cls.set(n, best ? cls.get(best)! : "embedding, norms, loss");
  }
  return cls;
}

/**
 * The step's simulated seconds by op class, from core 0's timeline (an SPMD step runs the same
 * program on every core), plus "core skew": how much later than core 0 the slowest core ended.
 * The classes add up to the step time. A node's own compute goes to
 * its class; its
 * collectives to the AllToAll, gradient AllReduce or "other collectives" class. The backward
 * pass has two AllToAlls per MoE layer, mirrors of the forward ones: walking backwards through
 * the layer, the first is the combine's and the second the dispatch's.
 *
 * @example
 * ```ts
 * import { adafactor, Graph, partition, sliceTopology } from "@podsim/podsim";
 * import { buildTransformer } from "./transformer.ts";
 * const model = buildTransformer(new Graph(), {
 *   batch: 8, sourceLength: 4, targetLength: 4, sourceVocabulary: 16, targetVocabulary: 16,
 *   dModel: 8, heads: 2, hidden: 16, layers: 2, experts: 8, cores: 8,
 * });
 * const plan = partition(model.graph, sliceTopology("v3-8"), { outputs: [model.loss, ...model.grads!] });
 * const step = plan.train(undefined, { optimizer: adafactor(), params: model.params, grads: model.grads!, step: 1 });
 * const seconds = stepBreakdown(model, plan, step);
 * console.log(seconds["expert FFN"] > 0, seconds["dispatch AllToAll"] > 0); // true true
 * ```
 */
export function stepBreakdown(
  model: TransformerGraph,
  plan: PartitionedGraph,
  step: TrainStepResult,
): Record<StepClass, number> {
  const classes = classifyNodes(model);
  const out = Object.fromEntries(STEP_CLASSES.map((c) => [c, 0])) as Record<StepClass, number>;
  const collectives = new Map(plan.steps.map((s) => [s.node, s.collectives]));
  const dispatch = new Set(model.phases.dispatch);
  const lastForward = model.loss.id;
  let backwardAllToAlls = 0;
  const { steps, allReduceSeconds, recomputeSeconds, optimizerSeconds } = step.timeline;
  for (const node of [...steps.keys()].sort((a, b) => a.id - b.id)) {
    const { seconds, compute } = steps.get(node)!;
    const own = classes.get(node) ?? "embedding, norms, loss";
    out[own] += compute;
    const rest = seconds - compute;
    const kinds = (collectives.get(node) ?? []).map((c) => c.kind);
    if (kinds.length === 0) out[own] += rest;
    else if (kinds.includes("all-to-all")) {
      const backward = node.id > lastForward;
      const isDispatch = backward ? backwardAllToAlls++ % 2 === 1 : dispatch.has(node);
      out[isDispatch ? "dispatch AllToAll" : "combine AllToAll"] += rest;
    } else if (kinds.includes("all-reduce") && node.id > lastForward) {
      out["gradient AllReduce"] += rest;
    } else out["other collectives"] += rest;
  }
  out["gradient AllReduce"] += allReduceSeconds;
  out.recompute += recomputeSeconds;
  out.optimizer += optimizerSeconds;
  // The step ends when its slowest core does: how much later than core 0 that was (cores that
  // share links or sit at a line's end finish collectives at different times).
  out["core skew"] += Math.max(0, step.result.simulatedSeconds - step.result.cores[0].clock);
  return out;
}
