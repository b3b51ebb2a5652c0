/**
 * Element-wise ops: add, subtract and multiply (the second operand may be a suffix of the
 * first's shape, as a bias or a norm's scale is), scale by a constant, and fill. The partitioner
 * treats every op here as element-wise: shards stay where they are.
 *
 * @module
 */

import { ShapeError } from "../errors.ts";
import type { Graph, Node, OpDef } from "./graph.ts";
import { type Shape, showShape, sizeOf } from "./shape.ts";

/** Checks `b` is `a`'s shape or a suffix of it (broadcast over a's leading dims). */
function broadcastShape(op: string, [a, b]: readonly Shape[], names: readonly string[]): Shape {
  const offset = a.length - b.length;
  if (offset < 0 || b.some((d, i) => d !== a[offset + i])) {
    throw new ShapeError(
      `${op}: ${names[1]} of shape ${showShape(b)} must equal ${names[0]}'s shape ` +
        `${showShape(a)} or a suffix of it`,
    );
  }
  return a;
}

function binary(kind: string, f: (x: number, y: number) => number): OpDef<null> {
  return {
    kind,
    shape: (shapes, _attrs, names) => broadcastShape(kind, shapes, names),
    run: ([a, b]) => {
      const out = new Float32Array(a.length);
      const m = b.length;
      if (m === a.length) { for (let i = 0; i < a.length; i++) out[i] = f(a[i], b[i]); }
      else if (m > 0) {
        for (let i = 0; i < a.length; i += m) {
          for (let j = 0; j < m; j++) out[i + j] = f(a[i + j], b[j]);
        }
      }
      return out;
    },
    cost: ([a, b]) => ({ flops: sizeOf(a), elements: 2 * sizeOf(a) + sizeOf(b) }),
  };
}

/** Sums the gradient of a broadcast operand over the leading dims it was broadcast along. */
export function unbroadcast(g: Node, shape: Shape): Node {
  const lead = g.rank - shape.length;
  return lead === 0 ? g : sumLeading(g, lead);
}

const ADD: OpDef<null> = {
  ...binary("add", (x, y) => x + y),
  vjp: (node, gout) => [gout, unbroadcast(gout, node.inputs[1].shape)],
};
const SUB: OpDef<null> = {
  ...binary("sub", (x, y) => x - y),
  vjp: (node, gout) => [gout, unbroadcast(scale(gout, -1), node.inputs[1].shape)],
};
const MUL: OpDef<null> = {
  ...binary("mul", (x, y) => x * y),
  vjp: (node, gout) => {
    const [a, b] = node.inputs;
    return [mul(gout, b), unbroadcast(mul(gout, a), b.shape)];
  },
};

// `a * b` whose gradient flows to `a` only: `b` is a constant (a mask, loss weights).
const MUL_BY_CONSTANT: OpDef<null> = {
  ...binary("mul", (x, y) => x * y),
  vjp: (node, gout) => [mul(gout, node.inputs[1]), undefined],
};

/**
 * `a * b` (as {@linkcode mul}, sharded the same way) with no gradient for `b`: for weights and
 * masks that are data, not parameters. Internal.
 */
export function mulByConstant(a: Node, b: Node): Node {
  return a.graph.apply(MUL_BY_CONSTANT, [a, b], null);
}

/**
 * `a + b`; `b` may be a suffix of `a`'s shape.
 *
 * @example
 * ```ts
 * import { add, evaluate, Graph } from "@podsim/podsim";
 * const g = new Graph();
 * const y = add(g.input("x", [2, 2]), g.input("bias", [2]));
 * console.log(evaluate(g, { x: Float32Array.of(1, 2, 3, 4), bias: Float32Array.of(10, 20) }).get(y));
 * // Float32Array(4) [11, 22, 13, 24]
 * ```
 */
export function add(a: Node, b: Node): Node {
  return a.graph.apply(ADD, [a, b], null);
}

/**
 * `a - b`; `b` may be a suffix of `a`'s shape.
 *
 * @example
 * ```ts
 * import { evaluate, Graph, sub } from "@podsim/podsim";
 * const g = new Graph();
 * const y = sub(g.input("a", [2]), g.input("b", [2]));
 * console.log(evaluate(g, { a: Float32Array.of(5, 5), b: Float32Array.of(1, 2) }).get(y)); // [4, 3]
 * ```
 */
export function sub(a: Node, b: Node): Node {
  return a.graph.apply(SUB, [a, b], null);
}

/**
 * `a * b` element-wise; `b` may be a suffix of `a`'s shape.
 *
 * @example
 * ```ts
 * import { evaluate, Graph, mul } from "@podsim/podsim";
 * const g = new Graph();
 * const y = mul(g.input("a", [2]), g.input("b", [2]));
 * console.log(evaluate(g, { a: Float32Array.of(2, 3), b: Float32Array.of(4, 5) }).get(y)); // [8, 15]
 * ```
 */
export function mul(a: Node, b: Node): Node {
  return a.graph.apply(MUL, [a, b], null);
}

/** Attributes of {@linkcode scale}. */
export interface ScaleAttrs {
  /** The factor. */
  readonly factor: number;
}

const SCALE: OpDef<ScaleAttrs> = {
  kind: "scale",
  shape: ([a]) => a,
  run: ([a], _s, _o, { factor }) => {
    const out = new Float32Array(a.length);
    for (let i = 0; i < a.length; i++) out[i] = a[i] * factor;
    return out;
  },
  cost: ([a]) => ({ flops: sizeOf(a), elements: 2 * sizeOf(a) }),
  vjp: (node, gout) => [scale(gout, node.attrs.factor)],
};

/**
 * `a * factor`.
 *
 * @example
 * ```ts
 * import { evaluate, Graph, scale } from "@podsim/podsim";
 * const g = new Graph();
 * const y = scale(g.input("a", [2]), 0.5);
 * console.log(evaluate(g, { a: Float32Array.of(2, 4) }).get(y)); // [1, 2]
 * ```
 */
export function scale(a: Node, factor: number): Node {
  if (!Number.isFinite(factor)) throw new ShapeError(`scale: factor must be finite, got ${factor}`);
  return a.graph.apply(SCALE, [a], { factor });
}

/** Attributes of {@linkcode fill}. */
export interface FillAttrs {
  /** The shape to fill. */
  readonly shape: Shape;
  /** The value of every element. */
  readonly value: number;
}

const FILL: OpDef<FillAttrs> = {
  kind: "fill",
  shape: (_s, { shape }) => shape,
  run: (_i, _s, out, { value }) => new Float32Array(sizeOf(out)).fill(value),
  cost: (_s, out) => ({ flops: 0, elements: sizeOf(out) }),
};

/**
 * A tensor of `shape` with every element `value` (gradient seeds, masks).
 *
 * @example
 * ```ts
 * import { evaluate, fill, Graph } from "@podsim/podsim";
 * const g = new Graph();
 * console.log(evaluate(g, {}).get(fill(g, [3], 1))); // [1, 1, 1]
 * ```
 */
export function fill(graph: Graph, shape: Shape, value: number): Node {
  return graph.apply(FILL, [], { shape: Object.freeze([...shape]), value });
}

/** Attributes of the leading-dims sum used for broadcast gradients. */
interface SumLeadingAttrs {
  readonly lead: number;
}

const SUM_LEADING: OpDef<SumLeadingAttrs> = {
  kind: "sum_leading",
  shape: ([a], { lead }) => a.slice(lead),
  run: ([a], _s, out) => {
    const m = sizeOf(out);
    const res = new Float32Array(m);
    if (m > 0) {
      for (let i = 0; i < a.length; i += m) for (let j = 0; j < m; j++) res[j] += a[i + j];
    }
    return res;
  },
  cost: ([a], out) => ({ flops: sizeOf(a), elements: sizeOf(a) + sizeOf(out) }),
  vjp: (node, gout) => [broadcastTo(gout, node.inputs[0].shape)],
};

/** Sums over the first `lead` dims. */
function sumLeading(a: Node, lead: number): Node {
  return a.graph.apply(SUM_LEADING, [a], { lead });
}

const BROADCAST: OpDef<{ readonly shape: Shape }> = {
  kind: "broadcast",
  shape: ([a], { shape }, names) => broadcastShape("broadcast", [shape, a], ["target", names[0]]),
  run: ([a], _s, out) => {
    const res = new Float32Array(sizeOf(out));
    if (a.length > 0) { for (let i = 0; i < res.length; i += a.length) res.set(a, i); }
    return res;
  },
  cost: (_s, out) => ({ flops: 0, elements: 2 * sizeOf(out) }),
  vjp: (node, gout) => [unbroadcast(gout, node.inputs[0].shape)],
};

/** Repeats `a` over new leading dims to `shape` (a's shape must be a suffix of it). */
export function broadcastTo(a: Node, shape: Shape): Node {
  return a.graph.apply(BROADCAST, [a], { shape: Object.freeze([...shape]) });
}
