/**
 * Reductions over chosen axes (sum, mean, max; the reduced axes are dropped), the broadcast
 * that is their gradient, and the weighted mean losses use. Sums accumulate in float64.
 *
 * For the partitioner: `sum`, `mean` and `max` reduce exactly their `axes` attribute (a shard
 * of a reduced dim gives a partial result to combine with an AllReduce of the same kind -- for
 * `mean`, a sum of partial sums times 1/count of the full shape); every other dim maps to the
 * output dim of the same size in order. `broadcast_axes` inserts `axes`.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import { mulByConstant, scale } from "./elementwise.ts";
import type { Node, OpDef } from "./graph.ts";
import { indexMap } from "./layout.ts";
import { axisOf, type Shape, showShape, sizeOf, stridesOf } from "./shape.ts";

/** Attributes of the reductions: the reduced axes, non-negative and ascending. */
export interface ReduceAttrs {
  /** The axes reduced (and dropped from the output). */
  readonly axes: readonly number[];
}

/** Normalises `axes` of `a` (default: all) to ascending non-negative axes, or throws. */
export function normaliseAxes(op: string, a: Node, axes?: readonly number[]): number[] {
  if (axes === undefined) return a.shape.map((_, i) => i);
  if (!Array.isArray(axes)) {
    throw new ShapeError(`${op}: axes must be a list of axes of ${a}, got ${String(axes)}`);
  }
  const out = axes.map((x) => axisOf(op, x, a.rank, a.toString()));
  const seen = new Set<number>();
  for (const [i, x] of out.entries()) {
    if (seen.has(x)) {
      throw new ShapeError(
        `${op}: axis ${axes[i]} appears twice in ${JSON.stringify(axes)} for ${a}`,
      );
    }
    seen.add(x);
  }
  return out.sort((p, q) => p - q);
}

/** The output shape of reducing `axes`; checks them (the partitioner may call this too). */
function reducedShape(op: string, a: Shape, axes: readonly number[], name: string): Shape {
  for (const x of axes) axisOf(op, x, a.length, name);
  if (new Set(axes).size !== axes.length) {
    throw new ShapeError(`${op}: axes ${JSON.stringify(axes)} of ${name} repeat an axis`);
  }
  return a.filter((_, i) => !axes.includes(i));
}

/** For each element of `shape`, the index of its output element after reducing `axes`. */
function reduceMap(shape: Shape, axes: readonly number[]): Float64Array {
  const kept = shape.filter((_, i) => !axes.includes(i));
  const st = stridesOf(kept);
  let k = 0;
  return indexMap(shape, shape.map((_, i) => (axes.includes(i) ? 0 : st[k++])));
}

function reducedCount(shape: Shape, axes: readonly number[]): number {
  return sizeOf(axes.map((x) => shape[x]));
}

function reduction(
  kind: string,
  reduce: (a: Float32Array, shape: Shape, out: Shape, axes: readonly number[]) => Float32Array,
  vjp: (node: Node<ReduceAttrs>, gout: Node) => readonly (Node | undefined)[],
  nonEmpty: boolean,
): OpDef<ReduceAttrs> {
  return {
    kind,
    shape: ([a], { axes }, names) => {
      const out = reducedShape(kind, a, axes, names[0]);
      if (nonEmpty && reducedCount(a, axes) === 0 && sizeOf(out) > 0) {
        throw new ShapeError(
          `${kind}: reduces axes ${JSON.stringify(axes)} of ${names[0]}, which hold no elements`,
        );
      }
      return out;
    },
    run: ([a], [s], out, { axes }) => reduce(a, s, out, axes),
    cost: ([a], out) => ({ flops: sizeOf(a), elements: sizeOf(a) + sizeOf(out) }),
    vjp,
  };
}

function sumRun(a: Float32Array, shape: Shape, out: Shape, axes: readonly number[]): Float64Array {
  const map = reduceMap(shape, axes);
  const acc = new Float64Array(sizeOf(out));
  for (let i = 0; i < map.length; i++) acc[map[i]] += a[i];
  return acc;
}

const SUM: OpDef<ReduceAttrs> = reduction(
  "sum",
  (a, s, out, axes) => Float32Array.from(sumRun(a, s, out, axes)),
  (node, gout) => [broadcastAxes(gout, node.inputs[0].shape, node.attrs.axes)],
  false,
);

const MEAN: OpDef<ReduceAttrs> = reduction(
  "mean",
  (a, s, out, axes) => {
    const acc = sumRun(a, s, out, axes);
    const n = reducedCount(s, axes);
    return Float32Array.from(acc, (x) => x / n);
  },
  (node, gout) => {
    const x = node.inputs[0];
    const n = reducedCount(x.shape, node.attrs.axes);
    return [scale(broadcastAxes(gout, x.shape, node.attrs.axes), 1 / n)];
  },
  true,
);

const MAX: OpDef<ReduceAttrs> = reduction(
  "max",
  (a, s, out, axes) => {
    const map = reduceMap(s, axes);
    const res = new Float32Array(sizeOf(out)).fill(-Infinity);
    for (let i = 0; i < map.length; i++) if (a[i] > res[map[i]]) res[map[i]] = a[i];
    return res;
  },
  (node, gout) => [maxGrad(node.inputs[0], gout, node.attrs.axes)],
  true,
);

/**
 * Sums `a` over `axes` (negative axes count from the end; default: all, giving a scalar). The
 * reduced axes are dropped.
 *
 * @example
 * ```ts
 * import { evaluate, Graph, sum } from "@podsim/podsim";
 * const g = new Graph();
 * const x = g.input("x", [2, 3]);
 * const rows = sum(x, [-1]);
 * const all = sum(x);
 * const values = evaluate(g, { x: Float32Array.of(1, 2, 3, 4, 5, 6) });
 * console.log(values.get(rows), values.get(all)); // [6, 15] [21]
 * ```
 */
export function sum(a: Node, axes?: readonly number[]): Node {
  return a.graph.apply(SUM, [a], { axes: Object.freeze(normaliseAxes("sum", a, axes)) });
}

/**
 * The mean of `a` over `axes` (default: all); the axes must hold at least one element.
 *
 * @example
 * ```ts
 * import { evaluate, Graph, mean } from "@podsim/podsim";
 * const g = new Graph();
 * const y = mean(g.input("x", [2, 2]), [0]);
 * console.log(evaluate(g, { x: Float32Array.of(1, 2, 3, 6) }).get(y)); // [2, 4]
 * ```
 */
export function mean(a: Node, axes?: readonly number[]): Node {
  return a.graph.apply(MEAN, [a], { axes: Object.freeze(normaliseAxes("mean", a, axes)) });
}

/**
 * The maximum of `a` over `axes` (default: all). Its gradient goes to the first maximal
 * element in row-major order (deterministic; ties do not split the gradient).
 *
 * @example
 * ```ts
 * import { evaluate, Graph, max } from "@podsim/podsim";
 * const g = new Graph();
 * const y = max(g.input("x", [2, 2]), [1]);
 * console.log(evaluate(g, { x: Float32Array.of(1, 5, 7, 3) }).get(y)); // [5, 7]
 * ```
 */
export function max(a: Node, axes?: readonly number[]): Node {
  return a.graph.apply(MAX, [a], { axes: Object.freeze(normaliseAxes("max", a, axes)) });
}

const MAX_GRAD: OpDef<ReduceAttrs> = {
  kind: "max_grad",
  shape: ([x, g], { axes }, names) => {
    const out = reducedShape("max_grad", x, axes, names[0]);
    if (out.length !== g.length || out.some((d, i) => d !== g[i])) {
      throw new ShapeError(
        `max_grad: ${names[1]} must have the reduced shape ${showShape(out)} of ${names[0]}`,
      );
    }
    return x;
  },
  run: ([x, g], [s], _out, { axes }) => {
    const map = reduceMap(s, axes);
    const best = new Float64Array(g.length).fill(-1);
    for (let i = 0; i < map.length; i++) {
      const o = map[i];
      if (best[o] < 0 || x[i] > x[best[o]]) best[o] = i;
    }
    const res = new Float32Array(x.length);
    for (let o = 0; o < g.length; o++) if (best[o] >= 0) res[best[o]] = g[o];
    return res;
  },
  cost: ([x, g]) => ({ flops: sizeOf(x), elements: 2 * sizeOf(x) + sizeOf(g) }),
};

/**
 * The gradient of {@linkcode max}: `gout` placed at the first maximal element of `x` over
 * `axes` (in row-major order), zero elsewhere. Internal grad op, used by `max`'s vjp.
 */
export function maxGrad(x: Node, gout: Node, axes: readonly number[]): Node {
  return x.graph.apply(MAX_GRAD, [x, gout], { axes: Object.freeze([...axes]) });
}

/** Attributes of {@linkcode broadcastAxes}. */
export interface BroadcastAxesAttrs {
  /** The output shape. */
  readonly shape: Shape;
  /** The output axes that the input lacks (non-negative, ascending). */
  readonly axes: readonly number[];
}

const BROADCAST_AXES: OpDef<BroadcastAxesAttrs> = {
  kind: "broadcast_axes",
  shape: ([a], { shape, axes }, names) => {
    const want = reducedShape("broadcast_axes", shape, axes, `the target ${showShape(shape)}`);
    if (want.length !== a.length || want.some((d, i) => d !== a[i])) {
      throw new ShapeError(
        `broadcast_axes: ${names[0]} must have shape ${showShape(want)} to broadcast to ` +
          `${showShape(shape)} along axes ${JSON.stringify(axes)}`,
      );
    }
    return shape;
  },
  run: ([a], _s, out, { axes }) => {
    const map = reduceMap(out, axes);
    const res = new Float32Array(map.length);
    for (let i = 0; i < map.length; i++) res[i] = a[map[i]];
    return res;
  },
  cost: ([a], out) => ({ flops: 0, elements: sizeOf(a) + sizeOf(out) }),
  vjp: (node, gout) => [sum(gout, node.attrs.axes)],
};

/**
 * Repeats `a` along new `axes` of the output `shape` (the inverse shape change of a reduction
 * over those axes, and the gradient of {@linkcode sum}).
 *
 * @example
 * ```ts
 * import { broadcastAxes, evaluate, Graph } from "@podsim/podsim";
 * const g = new Graph();
 * const y = broadcastAxes(g.input("x", [2]), [2, 3], [1]);
 * console.log(evaluate(g, { x: Float32Array.of(1, 2) }).get(y)); // [1, 1, 1, 2, 2, 2]
 * ```
 */
export function broadcastAxes(a: Node, shape: Shape, axes: readonly number[]): Node {
  const ax = axes.map((x) =>
    axisOf("broadcast_axes", x, shape.length, `the target ${showShape(shape)}`)
  )
    .sort((p, q) => p - q);
  return a.graph.apply(BROADCAST_AXES, [a], {
    shape: Object.freeze([...shape]),
    axes: Object.freeze(ax),
  });
}

// ---------------------------------------------------------------------------------------------
// weighted mean

/** a / b of two scalars, 0 when b is 0. The gradient flows to `a` only. */
const RATIO: OpDef<null> = {
  kind: "ratio",
  shape: ([a, b], _attrs, names) => {
    if (a.length !== 0 || b.length !== 0) {
      throw new ShapeError(`ratio: ${names[0]} and ${names[1]} must be scalars`);
    }
    return [];
  },
  run: ([a, b]) => Float32Array.of(b[0] === 0 ? 0 : a[0] / b[0]),
  cost: () => ({ flops: 1, elements: 3 }),
  vjp: (node, gout) => [node.graph.apply(RATIO, [gout, node.inputs[1]], null), undefined],
};

/**
 * `sum(x * w) / sum(w)` over all elements, a scalar (0 when the weights sum to 0): the mean
 * over the positions a 0/1 padding mask `w` keeps. Differentiable in `x` only; the weights
 * are treated as constants (they get no gradient).
 *
 * @example
 * ```ts
 * import { evaluate, Graph, weightedMean } from "@podsim/podsim";
 * const g = new Graph();
 * const y = weightedMean(g.input("x", [3]), g.input("w", [3]));
 * const feeds = { x: Float32Array.of(2, 4, 100), w: Float32Array.of(1, 1, 0) };
 * console.log(evaluate(g, feeds).get(y)); // [3]
 * ```
 */
export function weightedMean(x: Node, w: Node): Node {
  if (x.rank !== w.rank || x.shape.some((d, i) => d !== w.shape[i])) {
    throw new ShapeError(`weighted_mean: weights ${w} must have the shape of ${x}`);
  }
  // Built from sums, so that a partitioned graph sums locally and all-reduces two scalars
  // instead of gathering the whole tensor on every core.
  return x.graph.apply(RATIO, [sum(mulByConstant(x, w)), sum(w)], null);
}
