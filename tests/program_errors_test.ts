import assert from "node:assert/strict";
import { type Program, ProgramError, RunLimitError, runProgram, sliceTopology } from "../mod.ts";
import { test } from "./_test.ts";

const v3_8 = sliceTopology("v3-8");

function throwsProgramError(program: Program, pattern: RegExp): void {
  assert.throws(
    () => runProgram(v3_8, program),
    (e: unknown) => e instanceof ProgramError && pattern.test(e.message),
  );
}

test("a send to itself is refused, naming the core", () => {
  throwsProgramError(function* (core) {
    if (core.id === 3) yield* core.send(3, undefined, { bytes: 1 });
  }, /core 3 .*send to itself/);
});

test("a send or receive naming a core outside the slice is refused", () => {
  for (const peer of [-1, 8, 1.5, NaN]) {
    throwsProgramError(function* (core) {
      if (core.id === 0) yield* core.send(peer, undefined, { bytes: 1 });
    }, new RegExp(`core 0 .*send to core ${peer} does not exist in v3-8 \\(cores 0..7\\)`));
  }
  throwsProgramError(function* (core) {
    if (core.id === 2) yield* core.recv(99);
  }, /core 2 .*recv from core 99 does not exist/);
});

test("negative or non-finite FLOPs and bytes are refused", () => {
  for (const bad of [-1, NaN, Infinity]) {
    throwsProgramError(function* (core) {
      yield* core.compute({ flops: bad });
    }, /compute flops must be a finite number >= 0/);
    throwsProgramError(function* (core) {
      yield* core.compute({ bytes: bad });
    }, /compute bytes must be a finite number >= 0/);
    throwsProgramError(function* (core) {
      yield* core.send((core.id + 1) % 8, undefined, { bytes: bad });
    }, /send to core \d bytes must be a finite number >= 0/);
    throwsProgramError(function* (core) {
      yield* core.alloc(bad, "weights");
    }, /alloc "weights" bytes must be a finite number >= 0/);
  }
});

test("a send of something that is not a typed array must say its bytes", () => {
  throwsProgramError(function* (core) {
    yield* core.send((core.id + 1) % 8, { rows: 4 });
  }, /needs options.bytes/);
});

test("a compute efficiency outside (0, 1] and an unknown dtype are refused", () => {
  throwsProgramError(function* (core) {
    yield* core.compute({ flops: 1, efficiency: 1.5 });
  }, /efficiency must be in \(0, 1\]/);
  throwsProgramError(function* (core) {
    yield* core.compute({ flops: 1, dtype: "f16" as never });
  }, /dtype must be "bf16" or "f32"/);
});

test("a program that is not a generator function is refused before the run", () => {
  assert.throws(() => runProgram(v3_8, (() => undefined) as never), ProgramError);
  assert.throws(() => runProgram(v3_8, 42 as never), ProgramError);
});

test("yielding something other than an operation explains how to use yield*", () => {
  throwsProgramError(function* () {
    yield 5 as never;
  }, /yielded 5, not an operation: use yield\*/);
});

test("an exception inside a program becomes a ProgramError naming the core, with the cause", () => {
  const cause = new TypeError("boom");
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        yield* core.compute({ flops: 1e6 });
        if (core.id === 6) throw cause;
      }),
    (e: unknown) =>
      e instanceof ProgramError && /core 6 program threw/.test(e.message) && e.cause === cause,
  );
});

test("a program that computes forever ends at the simulated-time limit", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        while (true) yield* core.compute({ flops: 61.5e12 });
      }, { limits: { maxSimulatedSeconds: 10 } }),
    (e: unknown) => e instanceof RunLimitError && /limit of 10s/.test(e.message),
  );
});

test("a program that sends forever in zero time ends at the operation limit", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        while (true) yield* core.send((core.id + 1) % 8, undefined, { bytes: 0 });
      }, { limits: { maxOps: 10_000 } }),
    (e: unknown) => e instanceof RunLimitError && /more than 10000 operations/.test(e.message),
  );
});

test("limits that are not positive are refused", () => {
  assert.throws(() => runProgram(v3_8, function* () {}, { limits: { maxOps: 0 } }), ProgramError);
  assert.throws(
    () => runProgram(v3_8, function* () {}, { limits: { maxSimulatedSeconds: -1 } }),
    ProgramError,
  );
});
