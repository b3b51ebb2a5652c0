import assert from "node:assert/strict";
import { grad } from "../src/ops/autodiff.ts";
import { evaluate, Graph } from "../src/ops/graph.ts";
import {
  broadcastAxes,
  type BroadcastAxesAttrs,
  max,
  mean,
  sum,
  weightedMean,
} from "../src/ops/reductions.ts";
import { type Shape, sizeOf, stridesOf } from "../src/ops/shape.ts";
import { fc } from "./_deps.ts";
import {
  assertClose,
  assertShapeError,
  checkGradients,
  distinct,
  rng,
  uniform,
} from "./_gradcheck.ts";
import { test } from "./_test.ts";

/** Reduces `data` of `shape` over `axes` in float64, coordinate by coordinate. */
function naiveReduce(
  data: Float32Array,
  shape: Shape,
  axes: number[],
  init: number,
  fold: (acc: number, x: number) => number,
): number[] {
  const keptDims = shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const outShape = keptDims.map((i) => shape[i]);
  const outStrides = stridesOf(outShape);
  const inStrides = stridesOf(shape);
  const out = new Array<number>(sizeOf(outShape)).fill(init);
  for (let flat = 0; flat < data.length; flat++) {
    let o = 0;
    keptDims.forEach((d, k) => (o += (Math.floor(flat / inStrides[d]) % shape[d]) * outStrides[k]));
    out[o] = fold(out[o], data[flat]);
  }
  return out;
}

const shapeAndAxes = fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 })
  .chain((shape) =>
    fc.tuple(
      fc.constant(shape),
      fc.subarray(shape.map((_, i) => i)),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    )
  );

test("sum, mean and max over any set of axes match a float64 reference", () => {
  fc.assert(
    fc.property(shapeAndAxes, ([shape, axes, seed]) => {
      const data = uniform(rng(seed), sizeOf(shape), -2, 2);
      const g = new Graph();
      const x = g.input("x", shape);
      // Mix positive and negative spellings of the same axes.
      const spelled = axes.map((a, i) => (i % 2 === 0 ? a - shape.length : a));
      const [s, m, mx] = [sum(x, spelled), mean(x, spelled), max(x, spelled)];
      const values = evaluate(g, { x: data });
      const count = sizeOf(axes.map((a) => shape[a]));
      const kept = shape.filter((_, i) => !axes.includes(i));
      for (const node of [s, m, mx]) assert.deepEqual(node.shape, kept);
      const ref = naiveReduce(data, shape, axes, 0, (acc, v) => acc + v);
      assertClose(values.get(s), ref, { atol: 1e-5, rtol: 1e-6 }, "sum");
      assertClose(values.get(m), ref.map((v) => v / count), { atol: 1e-6, rtol: 1e-6 }, "mean");
      const refMax = naiveReduce(data, shape, axes, -Infinity, Math.max);
      assertClose(values.get(mx), refMax, { atol: 0, rtol: 0 }, "max");
    }),
    { seed: 1234, numRuns: 150 },
  );
});

test("sum without axes reduces everything to a scalar, and an empty axis list copies", () => {
  const g = new Graph();
  const x = g.input("x", [2, 3]);
  const all = sum(x);
  const none = sum(x, []);
  const values = evaluate(g, { x: Float32Array.of(1, 2, 3, 4, 5, 6) });
  assert.deepEqual(all.shape, []);
  assert.deepEqual(Array.from(values.get(all)!), [21]);
  assert.deepEqual(none.shape, [2, 3]);
  assert.deepEqual(Array.from(values.get(none)!), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(sum(x, [1, 0]).attrs, { axes: [0, 1] });
});

test("sums accumulate in float64 (a million small values after a large one)", () => {
  const n = 1 << 20;
  const data = new Float32Array(n + 1).fill(1);
  data[0] = 2 ** 24;
  const g = new Graph();
  const s = sum(g.input("x", [n + 1]));
  assert.equal(evaluate(g, { x: data }).get(s)![0], 2 ** 24 + n);
});

test("max's gradient goes to the first maximal element in row-major order", () => {
  const g = new Graph();
  const x = g.input("x", [2, 2, 3]);
  const rows = max(x, [2]);
  const planes = max(x, [0, 2]);
  const [dRows] = grad(sum(rows), [x]);
  const [dPlanes] = grad(sum(planes), [x]);
  // deno-fmt-ignore
  const data = Float32Array.of(
    5, 1, 5,   2, 2, 0,
    9, 9, 9,   2, 1, 2,
  );
  const values = evaluate(g, { x: data });
  assert.deepEqual(Array.from(values.get(rows)!), [5, 2, 9, 2]);
  assert.deepEqual(Array.from(values.get(dRows)!), [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]);
  assert.deepEqual(Array.from(values.get(planes)!), [9, 2]);
  // Over dims 0 and 2 the candidates for column 1 are (0,1,*) then (1,1,*): the 2 at (0,1,0).
  assert.deepEqual(Array.from(values.get(dPlanes)!), [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]);
});

test("sum, mean and max gradients match finite differences", () => {
  const g = new Graph();
  const x = g.input("x", [3, 2, 4]);
  const feeds = { x: distinct(rng(5), 24, 0.05) };
  checkGradients(sum(x, [0, 2]), [x], feeds);
  checkGradients(mean(x, [-2]), [x], feeds);
  checkGradients(max(x, [0, 2]), [x], feeds);
  checkGradients(max(x), [x], feeds);
});

test("broadcastAxes repeats along the new axes and its gradient sums them", () => {
  const g = new Graph();
  const x = g.input("x", [2, 3]);
  const y = broadcastAxes(x, [4, 2, 3, 2], [0, -1]);
  assert.deepEqual((y.attrs as BroadcastAxesAttrs).axes, [0, 3]);
  const values = evaluate(g, { x: Float32Array.of(1, 2, 3, 4, 5, 6) });
  const out = values.get(y)!;
  assert.equal(out.length, 48);
  assert.deepEqual(Array.from(out.subarray(0, 12)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
  assert.deepEqual(Array.from(out.subarray(36, 48)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
  checkGradients(y, [x], { x: uniform(rng(6), 6) });
});

test("weightedMean averages over the positions with weight and ignores padding", () => {
  const g = new Graph();
  const x = g.input("x", [2, 2]);
  const w = g.input("w", [2, 2]);
  const y = weightedMean(x, w);
  const [dx] = grad(y, [x]);
  const feeds = { x: Float32Array.of(1, 2, 3, 1000), w: Float32Array.of(1, 1, 2, 0) };
  const values = evaluate(g, feeds);
  assertClose(values.get(y), [(1 + 2 + 6) / 4], {}, "weighted mean");
  assertClose(values.get(dx), [0.25, 0.25, 0.5, 0], {}, "d/dx");
  checkGradients(y, [x], { x: uniform(rng(7), 4), w: Float32Array.of(0.5, 1, 0, 2) });
  const zero = evaluate(g, { x: feeds.x, w: new Float32Array(4) });
  assert.deepEqual(Array.from(zero.get(y)!), [0]);
  assert.deepEqual(Array.from(zero.get(dx)!), [0, 0, 0, 0]);
});

test("weightedMean's weights are data: asked for, their gradient is zero", () => {
  const g = new Graph();
  const x = g.input("x", [3]);
  const w = g.input("w", [3]);
  const [, dw] = grad(weightedMean(x, w), [x, w]);
  const values = evaluate(g, { x: Float32Array.of(2, 4, 100), w: Float32Array.of(1, 1, 0) });
  assert.deepEqual(Array.from(values.get(dw)!), [0, 0, 0]);
});

test("reductions cost one read per input element and one write per output element", () => {
  const g = new Graph();
  const x = g.input("x", [4, 5, 6]);
  for (const node of [sum(x, [1]), mean(x, [1]), max(x, [1])]) {
    assert.deepEqual(node.op.cost([x.shape], node.shape, node.attrs), {
      flops: 120,
      elements: 120 + 24,
    });
  }
});

test("bad axes and shapes raise ShapeErrors naming the op, the tensor and the sizes", () => {
  const g = new Graph();
  const x = g.input("x", [2, 3]);
  assertShapeError(() => sum(x, [2]), "sum", "axis 2", "x[2, 3]", "rank 2");
  assertShapeError(() => mean(x, [-3]), "mean", "axis -3", "x[2, 3]");
  assertShapeError(() => max(x, [1, -1]), "max", "axis -1", "twice", "x[2, 3]");
  assertShapeError(() => sum(x, [0.5]), "sum", "axis 0.5");
  const empty = g.input("e", [0, 3]);
  assertShapeError(() => mean(empty, [0]), "mean", "e[0, 3]", "no elements");
  assertShapeError(() => max(empty), "max", "e[0, 3]", "no elements");
  assert.deepEqual(sum(empty, [0]).shape, [3]);
  assertShapeError(
    () => broadcastAxes(x, [2, 4, 3], [1, 2]),
    "broadcast_axes",
    "x[2, 3]",
    "[2, 4, 3]",
  );
  assertShapeError(() => broadcastAxes(x, [2, 3], [2]), "broadcast_axes", "axis 2");
  assertShapeError(
    () => weightedMean(x, g.input("w", [3, 2])),
    "weighted_mean",
    "w[3, 2]",
    "x[2, 3]",
  );
});
