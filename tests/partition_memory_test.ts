// Memory: the partitioned program keeps each core's tiles in its ledger -- parameters as weights,
// everything else as activations -- so a tensor split 8 ways costs each core 1/8 of the
// replicated one (padded tiles for uneven dims), and what a plan gathers shows up too.
import assert from "node:assert/strict";
import {
  einsum,
  Graph,
  partition,
  type PartitionOptions,
  relu,
  replicate,
  sliceTopology,
  split,
} from "../mod.ts";
import { test } from "./_test.ts";

const V3_8 = sliceTopology("v3-8");
const F32 = 4;

test("every core's ledger holds its tiles: activations for computed tensors, weights for parameters", () => {
  const g = new Graph();
  const x = split(g.input("x", [64, 32]), 0, 8);
  const w = g.param("w", [32, 16]);
  const y = relu(einsum("bm,mh->bh", x, w));
  const { result } = partition(g, V3_8, { outputs: [y] }).run();
  assert.equal(result.status, "completed");
  assert.equal(result.cores.length, 8);
  for (const core of result.cores) {
    assert.ok(core.peakBytes.activations > 0, `core ${core.id} activations`);
    // The replicated parameter, whole on every core.
    assert.equal(core.peakBytes.weights, 32 * 16 * F32, `core ${core.id} weights`);
    // x's tile and the einsum's tile are live together, then the einsum's and relu's.
    assert.equal(core.peakBytes.activations, (8 * 32 + 8 * 16) * F32, `core ${core.id} peak`);
    // At the end only the output's tile is held (inputs are freed after their last use).
    assert.equal(core.liveBytes.activations, 8 * 16 * F32, `core ${core.id} live`);
    assert.equal(core.liveBytes.weights, 0, `core ${core.id} live weights`);
  }
});

test("numeric and shape-only runs of a plan keep the same ledger", () => {
  const g = new Graph();
  const x = split(g.input("x", [16, 8]), 1, 8);
  const w = split(g.param("w", [8, 4]), 0, 8);
  einsum("bm,mh->bh", x, w);
  const plan = partition(g, V3_8);
  const numeric = plan.run({
    x: new Float32Array(128).fill(0.5),
    w: new Float32Array(32).fill(2),
  }).result;
  const shapes = plan.run().result;
  assert.deepEqual(
    numeric.cores.map((c) => c.peakBytes),
    shapes.cores.map((c) => c.peakBytes),
  );
});

/** Per-core peak bytes of a graph with one tensor annotated `how`, and relu of it. */
function peaks(how: "split" | "replicate", source: "input" | "param", shape: number[]) {
  const g = new Graph();
  const t = source === "input" ? g.input("t", shape) : g.param("t", shape);
  if (how === "split") split(t, 0, 8);
  else replicate(t);
  relu(t);
  const { result } = partition(g, V3_8).run();
  assert.equal(result.status, "completed");
  return result.cores.map((c) => c.peakBytes);
}

test("an input split 8 ways costs each core 1/8 of the replicated one", () => {
  const split8 = peaks("split", "input", [64, 1024]);
  const whole = peaks("replicate", "input", [64, 1024]);
  for (let core = 0; core < 8; core++) {
    // The input and its relu, both tiled.
    assert.equal(whole[core].activations, 2 * 64 * 1024 * F32);
    assert.equal(split8[core].activations, whole[core].activations / 8);
  }
});

test("a parameter split 8 ways costs each core 1/8 of the replicated one, as sharded weights", () => {
  const split8 = peaks("split", "param", [1024, 64]);
  const whole = peaks("replicate", "param", [1024, 64]);
  for (let core = 0; core < 8; core++) {
    assert.equal(whole[core].weights, 1024 * 64 * F32);
    assert.equal(whole[core]["sharded weights"], 0);
    assert.equal(split8[core]["sharded weights"], whole[core].weights / 8);
    assert.equal(split8[core].weights, 0);
    // The relu of a parameter is an activation, tiled like it.
    assert.equal(split8[core].activations, 1024 * 64 * F32 / 8);
  }
});

test("an uneven split costs every core the padded tile: 2 of 13 rows, even the core whose tile is empty", () => {
  const split8 = peaks("split", "input", [13, 256]);
  for (let core = 0; core < 8; core++) {
    assert.equal(split8[core].activations, 2 * (2 * 256 * F32), `core ${core}`);
  }
});

/** x [1024, 512] split on rows, w [512, 1024] split on columns: different free dims. */
function freeDimsPeak(options: PartitionOptions) {
  const g = new Graph();
  const x = split(g.input("x", [1024, 512]), 0, 8);
  const w = split(g.param("w", [512, 1024]), 1, 8);
  const y = einsum("bm,mh->bh", x, w);
  const { result } = partition(g, V3_8, { outputs: [y], ...options }).run();
  assert.equal(result.status, "completed");
  return result.cores.map((c) => c.peakTotalBytes);
}

test("gathering an operand shows in each core's peak memory; the CollectivePermute loop never holds it whole", () => {
  const gathered = freeDimsPeak({ freeDims: "all-gather" });
  const looped = freeDimsPeak({ freeDims: "collective-permute" });
  const xWhole = 1024 * 512 * F32;
  const xTile = xWhole / 8;
  for (let core = 0; core < 8; core++) {
    // The gather holds all of x (2 MiB) where the loop holds at most two tiles of it.
    assert.ok(
      gathered[core] - looped[core] >= xWhole - 2 * xTile,
      `core ${core}: peak ${gathered[core]} B gathering x vs ${looped[core]} B looping; ` +
        `the gathered x alone is ${xWhole} B`,
    );
  }
});
