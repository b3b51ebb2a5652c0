// Edge cases found in review: chips with more than two cores, cores that never join, long
// mismatches, option checks before work starts.
import assert from "node:assert/strict";
import {
  CollectiveMismatchError,
  createTopology,
  OptionsError,
  planCollective,
  ringTopology,
  runCollective,
  runProgram,
  sliceTopology,
} from "../mod.ts";
import { test } from "./_test.ts";

test("torus all-to-all works on chips with three cores", () => {
  const topology = createTopology({ chips: [2, 2], coresPerChip: 3 });
  for (const numeric of [false, true]) {
    const report = runCollective(topology, { kind: "all-to-all", length: 24 }, { numeric });
    assert.equal(report.plan.algorithm, "torus");
    assert.equal(report.result.status, "completed");
    if (numeric) assert.equal(report.maxAbsError, 0);
  }
});

test("a core that never joins a broadcast it only receives fails the run, naming it", () => {
  const ring = ringTopology(4);
  assert.throws(
    () =>
      runProgram(ring, function* (core) {
        if (core.id !== 3) yield* planCollective(ring, { kind: "broadcast", length: 8 }).run(core);
      }),
    (e: unknown) => {
      assert.ok(e instanceof CollectiveMismatchError);
      assert.match(e.message, /joined by 3 of 4 cores.*core 3 never joined/);
      assert.deepEqual(e.cores, [0, 3]);
      return true;
    },
  );
});

test("a mismatch deep inside a long group list is shown where the lists differ", () => {
  const v3_32 = sliceTopology("v3-32");
  const ids = Array.from({ length: 32 }, (_, i) => i);
  const swapped = [...ids.slice(0, 30), 31, 30];
  assert.throws(
    () =>
      runProgram(v3_32, function* (core) {
        yield* planCollective(v3_32, {
          kind: "all-reduce",
          length: 64,
          group: core.id === 9 ? swapped : ids,
        }).run(core);
      }),
    (e: unknown) => {
      assert.ok(e instanceof CollectiveMismatchError);
      assert.match(e.message, /31,30/);
      assert.match(e.message, /30,31/);
      return true;
    },
  );
});

test("cores outside every group may run shape-only while the members run on data", () => {
  const ring = ringTopology(8);
  const plan = planCollective(ring, { kind: "all-reduce", length: 4, group: [0, 1, 2, 3] });
  const result = runProgram(ring, function* (core) {
    const input = core.id < 4 ? new Float32Array(4).fill(1) : undefined;
    const out = yield* plan.run(core, input);
    if (core.id < 4) assert.equal(out![0], 4);
  });
  assert.equal(result.status, "completed");
});

test("runCollective checks its options before any work", () => {
  const ring = ringTopology(4);
  const spec = { kind: "all-reduce", length: 4 } as const;
  assert.throws(
    () => runCollective(ring, spec, { numeric: "yes" as unknown as boolean }),
    /numeric must be true or false/,
  );
  assert.throws(() => runCollective(ring, spec, { seed: NaN }), /seed must be an integer/);
  assert.throws(
    () => runCollective(ring, spec, { inputs: [new Float32Array(4)] }),
    /one Float32Array per core \(4\)/,
  );
  assert.throws(
    () => runCollective(ring, spec, { inputs: [1, 2, 3, 4].map(() => new Float32Array(3)) }),
    /inputs\[0\] must be a Float32Array of 4 elements/,
  );
  assert.throws(() => runCollective(ring, spec, { nummeric: true } as never), OptionsError);
});

test("an unknown spec field is refused even when an equal plan is cached", () => {
  const ring = ringTopology(4);
  planCollective(ring, { kind: "all-reduce", length: 4 });
  assert.throws(
    () => planCollective(ring, { kind: "all-reduce", length: 4, lenght: undefined } as never),
    /unknown field "lenght"/,
  );
});

test("a reduction or too many chunks are refused where they do not apply", () => {
  const ring = ringTopology(4);
  assert.throws(
    () => planCollective(ring, { kind: "all-gather", length: 4, reduction: "max" }),
    /reduction applies to all-reduce and reduce-scatter only/,
  );
  assert.throws(
    () => planCollective(ring, { kind: "all-reduce", length: 4, chunks: 1e7 }),
    /chunks must be at most/,
  );
});

test("a one-element all-reduce sends only the pieces that hold data, and still sums", () => {
  const ring = ringTopology(8);
  for (const algorithm of ["ring", "direct"] as const) {
    const plan = planCollective(ring, { kind: "all-reduce", length: 1, algorithm });
    const out: number[] = [];
    const result = runProgram(ring, function* (core) {
      out[core.id] = (yield* plan.run(core, Float32Array.of(core.id + 1)))![0];
    });
    assert.equal(result.status, "completed");
    assert.deepEqual(out, new Array(8).fill(36), algorithm);
    // The element's block is reduced along one chain of 7 sends, then gathered along another.
    assert.equal(result.totals.messages, 2 * 7, algorithm);
  }
});
