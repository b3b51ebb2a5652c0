// The MoE Transformer for translation (src/moe/transformer.ts): the sharded model gives the same
// loss and gradients as a single-core run of the same weights and batch.
import assert from "node:assert/strict";
import { evaluate, Graph, OptionsError, partition, sliceTopology } from "../mod.ts";
import { buildTransformer, type TransformerConfig } from "../src/moe/transformer.ts";
import { test } from "./_test.ts";
import { transformerFeeds } from "./_transformer_feeds.ts";

const CONFIG: TransformerConfig = {
  batch: 8,
  sourceLength: 6,
  targetLength: 5,
  sourceVocabulary: 20,
  targetVocabulary: 16,
  dModel: 8,
  heads: 2,
  hidden: 12,
  layers: 2,
  experts: 8,
  gate: { secondPolicy: "all" },
};

test("the sharded MoE Transformer gives the single-core loss and gradients on the same weights and batch", () => {
  const single = buildTransformer(new Graph(), CONFIG);
  const sharded = buildTransformer(new Graph(), { ...CONFIG, cores: 8 });
  const feeds = transformerFeeds(single, CONFIG);
  const reference = evaluate(single.graph, feeds);
  const plan = partition(sharded.graph, sliceTopology("v3-8"), {
    outputs: [sharded.loss, ...sharded.grads!],
  });
  const { result, values } = plan.run(feeds);
  assert.equal(result.status, "completed");
  const loss = reference.get(single.loss)![0];
  assert.ok(Math.abs(values.get(sharded.loss)![0] - loss) <= 1e-5 * Math.abs(loss), `${loss}`);
  single.grads!.forEach((d, i) => {
    const want = reference.get(d)!;
    const got = values.get(sharded.grads![i])!;
    let scale = 0;
    for (const v of want) scale = Math.max(scale, Math.abs(v));
    want.forEach((v, j) =>
      assert.ok(Math.abs(v - got[j]) <= 1e-5 * Math.max(scale, 1e-6), `${d.name}[${j}]`)
    );
  });
  // Two MoE layers (every other FFN: one in the encoder, one in the decoder), each with its
  // dispatch and return AllToAll in the forward pass.
  const allToAlls = plan.steps.filter((s) => plan.runs(s.node) && s.node.id <= sharded.loss.id)
    .flatMap((s) => s.collectives.filter((c) => c.kind === "all-to-all"));
  assert.equal(allToAlls.length, 2 * 2);
});

test("the dense model has no AllToAll, and sizes that do not fit the mesh are refused before training", () => {
  const dense = buildTransformer(new Graph(), { ...CONFIG, experts: 0, cores: 8 });
  const plan = partition(dense.graph, sliceTopology("v3-8"), { outputs: [dense.loss] });
  assert.ok(plan.collectives.every((c) => c.kind !== "all-to-all"));
  assert.throws(
    () => buildTransformer(new Graph(), { ...CONFIG, batch: 12, cores: 8 }),
    OptionsError,
  );
  assert.throws(
    () => buildTransformer(new Graph(), { ...CONFIG, experts: 4, cores: 8 }),
    /4 experts do not divide over 8 cores/,
  );
  assert.throws(
    () => buildTransformer(new Graph(), { ...CONFIG, dModel: 9 }),
    /does not divide into 2 heads/,
  );
});
