// Training steps of partitioned graphs (PartitionedGraph.train): the gradients of replicated
// weights are all-reduced together at the end, parameters and optimizer state are resident and
// charged to their own ledger categories, and rematerialisation trades recomputation for
// activation memory without changing a single number.
import assert from "node:assert/strict";
import {
  adafactor,
  adam,
  add,
  einsum,
  grad,
  Graph,
  mul,
  type Node,
  partition,
  planCollective,
  relu,
  replicate,
  ringTopology,
  runProgram,
  sliceTopology,
  split,
  sum,
} from "../mod.ts";
import { buildTransformer, type TransformerConfig } from "../src/moe/transformer.ts";
import type { PartitionedGraph, TrainStepResult } from "../src/ops/partition.ts";
import type { RematPlan } from "../src/ops/spmd_program.ts";
import { assertClose, feedsFor as randomFeeds } from "./_partition_helpers.ts";
import { transformerFeeds } from "./_transformer_feeds.ts";
import { test } from "./_test.ts";

const V3_8 = sliceTopology("v3-8");
const F32 = 4;

/**
 * A two-layer net on a batch split over `cores` (or whole): w1 is used twice (its gradient is
 * the sum of two partial einsums), w2 and b once; every weight is replicated.
 */
function replicatedNet(cores?: number) {
  const g = new Graph();
  const xIn = g.input("x", [16, 6]);
  const x = cores === undefined ? xIn : split(xIn, 0, cores);
  const w1 = g.param("w1", [6, 6]);
  const w2 = g.param("w2", [6, 4]);
  const b = g.param("b", [4]);
  const h = relu(einsum("bn,nk->bk", relu(einsum("bm,mn->bn", x, w1)), w1));
  const y = add(einsum("bn,nk->bk", h, w2), b);
  const loss = sum(mul(y, y));
  const params = [w1, w2, b];
  return { g, params, loss, grads: grad(loss, params) };
}

/** What one AllReduce of `length` f32 over the groups and algorithm of `step`'s moves. */
function allReduceTraffic(
  step: PartitionedGraph["steps"][number],
  length: number,
): { messages: number; bytes: number } {
  const like = step.reduce!;
  const plan = planCollective(V3_8, {
    kind: "all-reduce",
    length,
    group: like.groups.map((g) => [...g]),
    dtype: "f32",
    algorithm: like.algorithm,
  });
  return runProgram(V3_8, function* (core) {
    yield* plan.run(core, undefined);
  }).totals;
}

test("the gradients of three replicated weights are all-reduced in one combined AllReduce, and the trained weights equal a single-core run's", () => {
  const sharded = replicatedNet(8);
  const single = replicatedNet();
  const plan = partition(sharded.g, V3_8, { outputs: [sharded.loss, ...sharded.grads] });
  const one = partition(single.g, ringTopology(1), { outputs: [single.loss, ...single.grads] });
  const optimizer = adam({ learningRate: 0.05 });
  let feeds = randomFeeds(sharded.g, 7);
  let reference = { ...feeds };
  for (let step = 1; step <= 2; step++) {
    const out = plan.train(feeds, {
      optimizer,
      params: sharded.params,
      grads: sharded.grads,
      step,
    });
    const ref = one.train(reference, {
      optimizer,
      params: single.params,
      grads: single.grads,
      step,
    });
    assert.equal(out.result.status, "completed");
    assert.equal(ref.result.status, "completed");
    assert.equal(out.gradientAllReduces, 1);
    assert.ok(out.allReduceSeconds > 0 && out.timeline.allReduceSeconds > 0);
    // Each gradient's own step only computes: its sum is left partial for the combined one.
    for (const d of sharded.grads) {
      const seconds = out.stepSeconds.get(d)!;
      assert.ok(Math.abs(seconds - out.computeSeconds.get(d)!) <= 1e-9 * seconds, `${d}`);
    }
    assertClose(out.values.get(sharded.loss), ref.values.get(single.loss)!, `loss, step ${step}`);
    sharded.params.forEach((p, i) => {
      assertClose(out.params.get(p), ref.params.get(single.params[i])!, `${p.name}, step ${step}`);
    });
    feeds = {
      ...feeds,
      ...Object.fromEntries(sharded.params.map((p) => [p.name, out.params.get(p)!])),
    };
    reference = {
      ...reference,
      ...Object.fromEntries(single.params.map((p) => [p.name, ref.params.get(p)!])),
    };
  }
  // What moves: the loss's AllReduce and one AllReduce of every gradient element at once.
  const shapeOnly = plan.train(undefined, {
    optimizer,
    params: sharded.params,
    grads: sharded.grads,
    step: 1,
  }).result.totals;
  const elements = sharded.grads.reduce((n, d) => n + d.size, 0);
  const lossReduce = allReduceTraffic(plan.steps[sharded.loss.id], 1);
  const combined = allReduceTraffic(plan.steps[sharded.grads[1].id], elements);
  assert.equal(shapeOnly.messages, lossReduce.messages + combined.messages);
  assert.equal(shapeOnly.bytes, lossReduce.bytes + combined.bytes);
  // Run as a plain program, every gradient step reduces on its own, and w1's two partial
  // gradients are reduced apart before they are added: one AllReduce of w1's size more.
  const separate = plan.run().result.totals;
  const w1 = allReduceTraffic(plan.steps[sharded.grads[0].inputs[0].id], sharded.params[0].size);
  assert.equal(separate.bytes, shapeOnly.bytes + w1.bytes);
  assert.ok(separate.messages > shapeOnly.messages + w1.messages);
});

test("a parameter split over the cores is charged as sharded weights, replicated ones as weights, gradients as gradients, and all stay resident to the end", () => {
  const g = new Graph();
  const x = split(g.input("x", [16, 6]), 0, 8);
  const w = split(g.param("w", [6, 64]), 1, 8); // each core holds 8 of its 64 columns
  const v = replicate(g.param("v", [6, 4])); // every core holds all of it
  const y = relu(einsum("bm,mh->bh", x, w));
  const z = einsum("bm,mk->bk", x, v);
  const loss = add(sum(mul(y, y)), sum(mul(z, z)));
  const grads = grad(loss, [w, v]);
  const plan = partition(g, V3_8, { outputs: [loss, ...grads] });
  const tileBytes = (n: Node) =>
    plan.shardings.get(n)!.localShape(n.shape).reduce((a, k) => a * k, 1) * F32;
  const { result } = plan.train(randomFeeds(g, 3), {
    optimizer: adam(),
    params: [w, v],
    grads,
    step: 1,
  });
  assert.equal(result.status, "completed");
  for (const core of result.cores) {
    assert.equal(core.peakBytes["sharded weights"], 6 * 8 * F32, `core ${core.id}`);
    assert.equal(core.peakBytes.weights, 6 * 4 * F32, `core ${core.id}`);
    assert.equal(core.peakBytes.gradients, tileBytes(grads[0]) + tileBytes(grads[1]));
    // Adam's two moments of each parameter tile.
    assert.equal(core.peakBytes.optimizer, 2 * (6 * 8 + 6 * 4) * F32, `core ${core.id}`);
    // Parameters, their optimizer state and the gradients are still held when the step ends.
    assert.equal(core.liveBytes["sharded weights"], core.peakBytes["sharded weights"]);
    assert.equal(core.liveBytes.weights, core.peakBytes.weights);
    assert.equal(core.liveBytes.optimizer, core.peakBytes.optimizer);
    assert.equal(core.liveBytes.gradients, core.peakBytes.gradients);
  }
});

/** A small MoE Transformer whose MoE groups are 8 tokens: two sentences of 4. */
const CONFIG: TransformerConfig = {
  batch: 16,
  sourceLength: 4,
  targetLength: 4,
  sourceVocabulary: 16,
  targetVocabulary: 16,
  dModel: 8,
  heads: 2,
  hidden: 16,
  layers: 2,
  experts: 8,
  groupSize: 8,
};

/** The model on the v3-8 and its plan (a fresh plan: each keeps its own optimizer state). */
function shardedModel() {
  const model = buildTransformer(new Graph(), { ...CONFIG, cores: 8 });
  const plan = partition(model.graph, V3_8, { outputs: [model.loss, ...model.grads!] });
  return { model, plan };
}

test("the MoE Transformer with groups of two sentences trains on 8 cores to the single-core weights", () => {
  const { model, plan } = shardedModel();
  const single = buildTransformer(new Graph(), CONFIG);
  const one = partition(single.graph, ringTopology(1), {
    outputs: [single.loss, ...single.grads!],
  });
  // Tokens [16, 4, M] are regrouped into 8 groups of 8 without moving data: each core's two
  // sentences are one group.
  const regroups = plan.steps.filter((s) =>
    plan.runs(s.node) && s.node.op.kind === "reshape" && s.node.shape.join() === "8,8,8"
  );
  assert.equal(regroups.length, 2 * 2, "a regrouping into and out of each of the 2 MoE layers");
  for (const s of regroups) {
    assert.equal(s.collectives.length, 0);
    assert.match(s.strategy, /leading dim regrouped, evenly split/);
  }
  const feeds = transformerFeeds(single, CONFIG, { seed: 11, kept: 3 });
  const optimizer = adam({ learningRate: 0.01 });
  const out = plan.train(feeds, {
    optimizer,
    params: model.params,
    grads: model.grads!,
    step: 1,
  });
  const ref = one.train(feeds, { optimizer, params: single.params, grads: single.grads!, step: 1 });
  assert.equal(out.result.status, "completed");
  assert.equal(out.gradientAllReduces, 1);
  assertClose(out.values.get(model.loss), ref.values.get(single.loss)!, "loss");
  single.params.forEach((p, i) => {
    assertClose(out.values.get(model.grads![i]), ref.values.get(single.grads![i])!, `d${p.name}`);
    assertClose(out.params.get(model.params[i]), ref.params.get(p)!, p.name);
  });
});

/** One numeric Adafactor step of the model on a fresh plan, with or without remat. */
function transformerStep(remat: boolean): {
  step: TrainStepResult;
  model: ReturnType<typeof buildTransformer>;
  plan: PartitionedGraph;
  rematPlan: RematPlan;
} {
  const { model, plan } = shardedModel();
  const rematPlan = plan.rematerialisable(model.loss, model.checkpoints);
  const step = plan.train(transformerFeeds(model, CONFIG, { seed: 11, kept: 3 }), {
    optimizer: adafactor(),
    params: model.params,
    grads: model.grads!,
    step: 1,
    remat: remat ? rematPlan : undefined,
  });
  assert.equal(step.result.status, "completed");
  return { step, model, plan, rematPlan };
}

test("rematerialisation gives the same loss, gradients and weights, recomputes, holds fewer activations and takes longer", () => {
  const kept = transformerStep(false);
  const rematted = transformerStep(true);
  const { model } = kept;
  assert.ok(rematted.rematPlan.recompute.size > 0);
  // Recomputing runs the same ops on the same tiles: the numbers are identical.
  assert.deepEqual(rematted.step.values.get(rematted.model.loss), kept.step.values.get(model.loss));
  model.grads!.forEach((d, i) => {
    assert.deepEqual(rematted.step.values.get(rematted.model.grads![i]), kept.step.values.get(d));
  });
  model.params.forEach((p, i) => {
    assert.deepEqual(rematted.step.params.get(rematted.model.params[i]), kept.step.params.get(p));
  });
  assert.equal(kept.step.recomputeSeconds, 0);
  assert.ok(rematted.step.recomputeSeconds > 0);
  assert.ok(rematted.step.timeline.recomputeSeconds > 0);
  const a = kept.step.result;
  const b = rematted.step.result;
  for (const [i, core] of b.cores.entries()) {
    assert.ok(
      core.peakBytes.activations < a.cores[i].peakBytes.activations,
      `core ${i}: ${core.peakBytes.activations} B of activations with remat, ` +
        `${a.cores[i].peakBytes.activations} B without`,
    );
    assert.equal(core.peakBytes.weights, a.cores[i].peakBytes.weights);
    assert.equal(core.peakBytes.gradients, a.cores[i].peakBytes.gradients);
  }
  // The step is longer by the recomputation, and by nothing else.
  assert.ok(b.simulatedSeconds > a.simulatedSeconds);
  assert.ok(
    Math.abs(b.simulatedSeconds - a.simulatedSeconds - rematted.step.recomputeSeconds) <=
      1e-6 * a.simulatedSeconds,
    `${b.simulatedSeconds} - ${a.simulatedSeconds} vs recompute ${rematted.step.recomputeSeconds}`,
  );
});

test("the estimated training peak covers the resident weights, optimizer state and gradients, brackets the real peak, and drops with remat", () => {
  const { step, model, plan, rematPlan } = transformerStep(false);
  const optimizer = adafactor();
  const estimate = plan.estimateTrainingPeak(optimizer, model.params, model.grads!);
  const withRemat = plan.estimateTrainingPeak(optimizer, model.params, model.grads!, rematPlan);
  const core = step.result.cores[0];
  const resident = core.peakBytes.weights + core.peakBytes["sharded weights"] +
    core.peakBytes.optimizer;
  assert.ok(resident > 0 && core.peakBytes.gradients > 0);
  assert.ok(withRemat >= resident + core.peakBytes.gradients, `${withRemat} vs ${resident}`);
  assert.ok(withRemat < estimate, `${withRemat} B with remat, ${estimate} B without`);
  // The estimate leaves retiled temporaries out, and nothing else.
  for (const c of step.result.cores) {
    assert.ok(estimate <= c.peakTotalBytes, `core ${c.id}: ${estimate} > ${c.peakTotalBytes}`);
    assert.ok(c.peakTotalBytes <= estimate + c.peakBytes.temporaries, `core ${c.id}`);
  }
});
