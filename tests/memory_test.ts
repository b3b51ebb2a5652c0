import assert from "node:assert/strict";
import {
  OptionsError,
  OutOfMemoryError,
  ProgramError,
  runProgram,
  sliceTopology,
  TPU_V3,
} from "../mod.ts";
import { test } from "./_test.ts";

const v3_8 = sliceTopology("v3-8");
const GiB = 2 ** 30;

test("every core's budget is the 16 GiB of HBM a TPU v3 core has", () => {
  const result = runProgram(v3_8, function* () {});
  assert.ok(result.cores.every((c) => c.budgetBytes === 16 * GiB));
  assert.equal(TPU_V3.hbmBytesPerCore, 16 * GiB);
});

test("the ledger keeps live and peak bytes by category, and the peak of the total", () => {
  const result = runProgram(v3_8, function* (core) {
    yield* core.alloc(4 * GiB, "weights");
    yield* core.alloc(3 * GiB, "activations");
    yield* core.free(3 * GiB, "activations");
    yield* core.alloc(2 * GiB, "optimizer");
    yield* core.alloc(1 * GiB, "activations");
  });
  const c = result.cores[3];
  assert.equal(c.liveBytes.weights, 4 * GiB);
  assert.equal(c.liveBytes.activations, 1 * GiB);
  assert.equal(c.peakBytes.activations, 3 * GiB);
  assert.equal(c.peakBytes.optimizer, 2 * GiB);
  assert.equal(c.peakTotalBytes, 7 * GiB);
});

test("an allocation over budget puts the core out of memory with its ledger", () => {
  const result = runProgram(v3_8, function* (core) {
    yield* core.alloc(10 * GiB, "weights", "expert weights");
    if (core.id === 4) yield* core.alloc(7 * GiB, "activations", "attention scores");
  });
  assert.equal(result.status, "out_of_memory");
  assert.ok(result.error instanceof OutOfMemoryError);
  assert.equal(result.error.core, 4);
  assert.equal(result.error.ledger.live.weights, 10 * GiB);
  assert.deepEqual(result.error.request, {
    bytes: 7 * GiB,
    category: "activations",
    label: "attention scores",
  });
  assert.match(result.error.message, /core 4 out of memory/);
  assert.match(result.error.message, /"attention scores" asked for 7\.00 GiB of activations/);
  assert.match(result.error.message, /weights\s+live\s+10\.00 GiB/);
  // Cores run in id order at t=0: 0-3 finished, 4 failed, and the run stopped before 5-7 ran.
  assert.deepEqual(result.cores.map((c) => c.state), [
    ...Array(4).fill("done"),
    "out_of_memory",
    ...Array(3).fill("idle"),
  ]);
  assert.match(result.cores[4].reason!, /^core 4 out of memory/);
});

test("an allocation that fills the budget exactly fits", () => {
  const result = runProgram(v3_8, function* (core) {
    yield* core.alloc(100, "buffers");
    yield* core.alloc(28, "temporaries");
  }, { memoryBudget: 128 });
  assert.equal(result.status, "completed");
});

test("the run stops at the first core out of memory", () => {
  const result = runProgram(v3_8, function* (core) {
    yield* core.alloc(64, "buffers");
    yield* core.compute({ flops: 1e9 });
    yield* core.alloc(2 ** 40, "buffers");
  });
  assert.equal(result.status, "out_of_memory");
  assert.equal(result.cores.filter((c) => c.state === "out_of_memory").length, 1);
});

test("freeing more than was allocated is a ProgramError naming the core and category", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        yield* core.alloc(10, "gradients");
        yield* core.free(11, "gradients", "grad of wi");
      }),
    (e: unknown) =>
      e instanceof ProgramError &&
      /core 0 .*free "grad of wi" of 11 bytes of gradients, but only 10 are allocated/.test(
        e.message,
      ),
  );
});

test("a budget of zero or less is refused before the run starts", () => {
  for (const memoryBudget of [0, -1, NaN]) {
    let ran = false;
    assert.throws(
      () =>
        runProgram(v3_8, function* (core) {
          ran = true;
          yield* core.compute({ flops: 1 });
        }, { memoryBudget }),
      (e: unknown) =>
        e instanceof OptionsError &&
        e.message === `memoryBudget must be a positive number of bytes, got ${memoryBudget}`,
    );
    assert.equal(ran, false);
  }
});

test("an unknown memory category is a ProgramError", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        yield* core.alloc(1, "cache" as never);
      }),
    (e: unknown) =>
      e instanceof ProgramError &&
      e.message === 'core 0 at t=0s: alloc "cache" category "cache" is not one of weights, ' +
          "sharded weights, activations, optimizer, gradients, temporaries, buffers",
  );
});

test("byte counts of allocations must be whole numbers", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        yield* core.alloc(0.3, "buffers");
      }),
    (e: unknown) =>
      e instanceof ProgramError &&
      e.message === 'core 0 at t=0s: alloc "buffers" bytes must be a finite integer >= 0, got 0.3',
  );
});
