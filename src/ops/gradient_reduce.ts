/**
 * The gradient AllReduce, combined: a training step's gradients of replicated weights are
 * partial sums on each core (their einsums contract over the split batch). Rather than one
 * AllReduce per gradient as the steps finish, the steps leave their tiles partial and one
 * AllReduce per replica-group set reduces all of them at the end, as XLA's AllReduce combiner
 * does: the same bytes, one latency chain instead of hundreds. A gradient that is the sum of two
 * such partials (a tied embedding) is summed partial and reduced once.
 *
 * @module
 */

import type { CoreHandle, ProgramGenerator } from "../actors/program.ts";
import { type CollectivePlan, planCollective } from "../collectives/plan.ts";
import type { Topology } from "../topology/topology.ts";
import type { Node } from "./graph.ts";
import type { PartitionStep } from "./partition.ts";
import { partitionerAlgorithm } from "./reshard.ts";
import { sizeOf } from "./shape.ts";

/** One combined AllReduce: the gradients it reduces, in order, and its plan. */
export interface GradientBucket {
  /** Gradient nodes whose tiles are concatenated (in this order). */
  readonly nodes: readonly Node[];
  /** Elements of each node's tile. */
  readonly lengths: readonly number[];
  /** The AllReduce over the concatenation. */
  readonly plan: CollectivePlan;
}

/** Which steps leave their AllReduce to the combined one, and the combined AllReduces. */
export interface GradientReducePlan {
  /** Steps whose own AllReduce is skipped (their tiles stay partial sums). */
  readonly deferred: ReadonlySet<Node>;
  /** The combined AllReduces. */
  readonly buckets: readonly GradientBucket[];
}

/**
 * Plans the combined gradient AllReduce for `grads`: a gradient qualifies when nothing else in
 * the program reads it and its step ends in a plain sum AllReduce (or it adds two such steps'
 * results, each read by nothing else, reduced over the same groups).
 */
export function planGradientReduce(
  topology: Topology,
  steps: readonly PartitionStep[],
  needed: ReadonlySet<Node>,
  keep: ReadonlySet<Node>,
  grads: readonly Node[],
): GradientReducePlan {
  const readers = new Map<Node, number>();
  for (const s of steps) {
    if (!needed.has(s.node)) continue;
    for (const x of new Set(s.node.inputs)) readers.set(x, (readers.get(x) ?? 0) + 1);
  }
  const plainSum = (n: Node) => {
    const s = steps[n.id];
    return s.reduce !== undefined && s.reduce.reduction === "sum" && !s.scaleBy &&
      s.after.length === 0 && !s.loop;
  };
  const groupsKey = (n: Node) => JSON.stringify(steps[n.id].reduce!.groups);
  const deferred = new Set<Node>();
  const byGroups = new Map<string, { nodes: Node[]; groups: number[][]; dtype: Node["dtype"] }>();
  const add = (grad: Node, source: Node) => {
    const key = `${groupsKey(source)}|${grad.dtype}`;
    let bucket = byGroups.get(key);
    if (bucket === undefined) {
      const groups = steps[source.id].reduce!.groups.map((g) => [...g]);
      byGroups.set(key, bucket = { nodes: [], groups, dtype: grad.dtype });
    }
    bucket.nodes.push(grad);
  };
  for (const grad of new Set(grads)) {
    if (!needed.has(grad) || (readers.get(grad) ?? 0) > 0) continue;
    if (plainSum(grad)) {
      deferred.add(grad);
      add(grad, grad);
      continue;
    }
    const s = steps[grad.id];
    const [a, b] = grad.inputs;
    const sumOfPartials = grad.op.kind === "add" && grad.inputs.length === 2 && a !== b &&
      s.collectives.length === 0 && s.reshards.every((r) => r.length === 0) &&
      [a, b].every((x) =>
        plainSum(x) && readers.get(x) === 1 && !keep.has(x) &&
        steps[x.id].output.key === s.output.key
      ) &&
      groupsKey(a) === groupsKey(b);
    if (sumOfPartials) {
      deferred.add(a);
      deferred.add(b);
      add(grad, a);
    }
  }
  const buckets = [...byGroups.values()].map(({ nodes, groups, dtype }) => {
    const lengths = nodes.map((n) => sizeOf(steps[n.id].output.localShape(n.shape)));
    const plan = planCollective(topology, {
      kind: "all-reduce",
      length: lengths.reduce((x, y) => x + y, 0),
      group: groups,
      dtype,
      algorithm: partitionerAlgorithm(groups),
    });
    return { nodes, lengths, plan };
  });
  return { deferred, buckets };
}

/**
 * Runs the combined AllReduces on one core: concatenates the partial tiles (numeric mode),
 * reduces, and puts the sums back in `tiles`. Returns the simulated seconds it took.
 */
export function* runGradientReduce(
  core: CoreHandle,
  plan: GradientReducePlan,
  tiles: Map<Node, Float32Array | undefined>,
): ProgramGenerator<number> {
  const start = core.now();
  for (const { nodes, lengths, plan: allReduce } of plan.buckets) {
    const numeric = nodes.every((n) => tiles.get(n) !== undefined);
    let combined: Float32Array | undefined;
    if (numeric) {
      combined = new Float32Array(allReduce.length);
      let at = 0;
      nodes.forEach((n, i) => {
        combined!.set(tiles.get(n)!, at);
        at += lengths[i];
      });
    }
    const reduced = yield* core.call(allReduce.run(core, combined));
    if (reduced === undefined) continue;
    let at = 0;
    nodes.forEach((n, i) => {
      tiles.set(n, reduced.slice(at, at + lengths[i]));
      at += lengths[i];
    });
  }
  return core.now() - start;
}
