import assert from "node:assert/strict";
import {
  type CoreHandle,
  createTopology,
  OptionsError,
  type Program,
  ProgramError,
  RunLimitError,
  runProgram,
  sliceTopology,
  TPU_V3,
} from "../mod.ts";
import { test } from "./_test.ts";

const v3_8 = sliceTopology("v3-8");

function throwsProgramError(program: Program, expected: RegExp | string): void {
  assert.throws(
    () => runProgram(v3_8, program),
    (e: unknown) => {
      assert.ok(e instanceof ProgramError, `expected a ProgramError, got ${e}`);
      if (typeof expected === "string") assert.equal(e.message, expected);
      else assert.match(e.message, expected);
      return true;
    },
  );
}

test("a send to itself is refused, naming the core", () => {
  throwsProgramError(function* (core) {
    if (core.id === 3) yield* core.send(3, undefined, { bytes: 1 });
  }, "core 3 at t=0s: send to itself");
});

test("a send or receive naming a core outside the slice is refused", () => {
  for (const peer of [-1, 8, 1.5, NaN]) {
    throwsProgramError(function* (core) {
      if (core.id === 0) yield* core.send(peer, undefined, { bytes: 1 });
    }, `core 0 at t=0s: send to core ${peer} does not exist in v3-8 (cores 0..7)`);
  }
  throwsProgramError(function* (core) {
    if (core.id === 2) yield* core.recv(99);
  }, "core 2 at t=0s: recv from core 99 does not exist in v3-8 (cores 0..7)");
});

test("negative or non-finite FLOPs and bytes are refused", () => {
  for (const bad of [-1, NaN, Infinity]) {
    throwsProgramError(function* (core) {
      yield* core.compute({ flops: bad });
    }, `core 0 at t=0s: compute flops must be a finite number >= 0, got ${bad}`);
    throwsProgramError(function* (core) {
      yield* core.compute({ bytes: bad });
    }, `core 0 at t=0s: compute bytes must be a finite number >= 0, got ${bad}`);
    throwsProgramError(function* (core) {
      yield* core.send(1, undefined, { bytes: bad });
    }, `core 0 at t=0s: send to core 1 bytes must be a finite integer >= 0, got ${bad}`);
    throwsProgramError(function* (core) {
      yield* core.alloc(bad, "weights");
    }, `core 0 at t=0s: alloc "weights" bytes must be a finite integer >= 0, got ${bad}`);
  }
});

test("a send of something that is not a typed array must say its bytes", () => {
  throwsProgramError(function* (core) {
    yield* core.send(1, { rows: 4 });
  }, "core 0 at t=0s: send to core 1 needs options.bytes (the payload is not a typed array)");
});

test("tags must be strings or finite numbers", () => {
  for (const tag of [NaN, Infinity, {} as never]) {
    throwsProgramError(function* (core) {
      yield* core.send(1, undefined, { bytes: 1, tag });
    }, /^core 0 at t=0s: send tag must be a string or a finite number, got /);
  }
});

test("a compute efficiency outside (0, 1] and an unknown dtype are refused", () => {
  throwsProgramError(function* (core) {
    yield* core.compute({ flops: 1, efficiency: 1.5 });
  }, "core 0 at t=0s: compute efficiency must be in (0, 1], got 1.5");
  throwsProgramError(function* (core) {
    yield* core.compute({ flops: 1, dtype: "f16" as never });
  }, 'core 0 at t=0s: compute dtype must be "bf16" or "f32", got f16');
});

test("something that is not a program or a topology is refused before the run", () => {
  assert.throws(() => runProgram(v3_8, 42 as never), OptionsError);
  assert.throws(() => runProgram("v3-8" as never, function* () {}), OptionsError);
  throwsProgramError(
    (() => undefined) as never,
    "core 0 at t=0s: the program returned undefined; it must be a synchronous generator " +
      "function (function*)",
  );
  throwsProgramError(
    async function* () {} as never,
    /^core 0 at t=0s: the program returned an object .*; it must be a synchronous generator/,
  );
});

test("a program function that throws when called becomes a ProgramError naming the core", () => {
  throwsProgramError((core: CoreHandle) => {
    if (core.id === 2) throw new Error("setup failed");
    return (function* () {})();
  }, "core 2 at t=0s: program threw: setup failed");
});

test("yielding something other than an operation explains how to use yield*", () => {
  throwsProgramError(function* () {
    yield 5 as never;
  }, /^core 0 at t=0s: yielded number 5, not an operation: use yield\*/);
  throwsProgramError(function* () {
    yield 1n as never;
  }, /^core 0 at t=0s: yielded bigint 1, not an operation/);
});

test("an exception inside a program becomes a ProgramError naming the core, with the cause", () => {
  const cause = new TypeError("boom");
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        yield* core.compute({ flops: 61.5e9 });
        if (core.id === 6) throw cause;
      }),
    (e: unknown) =>
      e instanceof ProgramError && e.message === "core 6 at t=0.001s: program threw: boom" &&
      e.cause === cause,
  );
});

test("an operation runs once, however it is yielded", () => {
  throwsProgramError(function* (core) {
    const send = core.send((core.id + 1) % 8, undefined, { bytes: 8 });
    yield* send;
    yield* send;
  }, "core 0 at t=0s: this send operation was already run; call the core handle again for another");
  throwsProgramError(function* (core) {
    const send = core.send((core.id + 1) % 8, undefined, { bytes: 8 });
    yield send as never;
    yield send as never;
  }, /^core 0 at t=0s: yielded a send operation that already ran/);
});

test("an operation must come from the running core's own handle", () => {
  const handles: CoreHandle[] = [];
  throwsProgramError(function* (core) {
    handles[core.id] = core;
    if (core.id === 1) yield* handles[0].compute({ flops: 1 });
  }, "core 1 at t=0s: yielded a compute operation built by core 0's handle");
  throwsProgramError(function* (core) {
    yield* handles[core.id].compute({ flops: 1 });
  }, "core 0 at t=0s: yielded a compute operation built by core 0's handle in another run");
});

test("an operation cannot be forged through its constructor", () => {
  throwsProgramError(function* (core) {
    const Forge = core.flush().constructor as new (...args: unknown[]) => never;
    yield new Forge(undefined, core, "compute", -1, "", undefined, -1e12, -1e12, "", "bf16", 0);
  }, "core 0 at t=0s: operations are built by the core handle only");
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

test("a loop that never lets simulated time pass ends at the default per-instant limit", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        while (true) yield* core.alloc(0, "buffers");
      }),
    (e: unknown) =>
      e instanceof RunLimitError &&
      /^core 0 issued more than 1000000 operations at t=0s without simulated time passing/
        .test(e.message),
  );
});

test("messages piling up unreceived end at the pending-message limit", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        while (true) {
          yield* core.send((core.id + 1) % 8, undefined, { bytes: 0 });
          yield* core.compute({ flops: 1 });
        }
      }, { limits: { maxPendingMessages: 1000 } }),
    (e: unknown) =>
      e instanceof RunLimitError && /^more than 1000 messages are in flight/.test(e.message),
  );
});

test("all programs together stop at the operation limit", () => {
  assert.throws(
    () =>
      runProgram(v3_8, function* (core) {
        while (true) yield* core.compute({ flops: 1 });
      }, { limits: { maxOps: 10_000 } }),
    (e: unknown) => e instanceof RunLimitError && /more than 10000 operations/.test(e.message),
  );
});

test("limits that are not positive are refused", () => {
  for (const limits of [{ maxOps: 0 }, { maxSimulatedSeconds: -1 }, { maxOpsPerInstant: NaN }]) {
    assert.throws(() => runProgram(v3_8, function* () {}, { limits }), OptionsError);
  }
});

test("a ping-pong of messages that take no time ends at the per-instant limit", () => {
  const instant = createTopology({
    chips: [2, 1],
    wrap: [false, false],
    coresPerChip: 1,
    hardware: { ...TPU_V3, iciLinkLatency: 0 },
  });
  assert.throws(
    () =>
      runProgram(instant, function* (core) {
        const peer = 1 - core.id;
        if (core.id === 0) yield* core.send(peer, undefined, { bytes: 0 });
        while (true) {
          yield* core.recv(peer);
          yield* core.send(peer, undefined, { bytes: 0 });
        }
      }, { limits: { maxOpsPerInstant: 1000 } }),
    (e: unknown) =>
      e instanceof RunLimitError &&
      /^core \d issued more than 1000 operations at t=0s/.test(e.message),
  );
});

test("a message received by a waiting core frees its place under the pending limit", () => {
  const result = runProgram(v3_8, function* (core) {
    if (core.id > 1) return;
    const peer = 1 - core.id;
    for (let i = 0; i < 500; i++) {
      if (core.id === i % 2) yield* core.send(peer, undefined, { bytes: 64 });
      else yield* core.recv(peer);
    }
  }, { limits: { maxPendingMessages: 1 } });
  assert.equal(result.status, "completed");
});

test("messages drained from a mailbox free their places under the pending limit", () => {
  const rounds = (limit: number) =>
    runProgram(v3_8, function* (core) {
      if (core.id > 1) return;
      for (let round = 0; round < 50; round++) {
        if (core.id === 0) {
          for (let i = 0; i < 3; i++) yield* core.send(1, undefined, { bytes: 64, tag: round });
          yield* core.recv(1, round);
        } else {
          yield* core.compute({ flops: 61.5e9 }); // the three land in the mailbox meanwhile
          for (let i = 0; i < 3; i++) yield* core.recv(0, round);
          yield* core.send(0, undefined, { bytes: 0, tag: round });
        }
      }
    }, { limits: { maxPendingMessages: limit } });
  assert.equal(rounds(3).status, "completed");
  assert.throws(() => rounds(2), RunLimitError);
});

test("the per-instant operation count starts again whenever time moves on", () => {
  const result = runProgram(v3_8, function* (core) {
    for (let i = 0; i < 100; i++) yield* core.compute({ flops: 61.5e6 });
  }, { limits: { maxOpsPerInstant: 10 } });
  assert.equal(result.status, "completed");
});

test("an operation changed after the handle checked it is refused when it runs", () => {
  for (
    const change of [
      (op: Record<string, unknown>) => (op.bytes = -4096),
      (op: Record<string, unknown>) => (op.category = "nonsense"),
      (op: Record<string, unknown>) => (op.kind = "teleport"),
    ]
  ) {
    assert.throws(
      () =>
        runProgram(v3_8, function* (core) {
          const op = core.alloc(8, "buffers");
          change(op as unknown as Record<string, unknown>);
          yield* op;
        }),
      (e: unknown) =>
        e instanceof ProgramError &&
        /core 0 at t=0s: a \w+ operation was changed after its checks/.test(e.message),
    );
  }
});
