import assert from "node:assert/strict";
import {
  DeadlockError,
  expectCompleted,
  ringTopology,
  runProgram,
  sliceTopology,
  TPU_V3,
} from "../mod.ts";
import { test } from "./_test.ts";

const v3_8 = sliceTopology("v3-8");

test("two cores that each wait for the other first are deadlocked", () => {
  const result = runProgram(v3_8, function* (core) {
    if (core.id > 1) return;
    const peer = 1 - core.id;
    yield* core.recv(peer, "hello");
    yield* core.send(peer, undefined, { bytes: 4, tag: "hello" });
  });
  assert.equal(result.status, "deadlocked");
  assert.ok(result.error instanceof DeadlockError);
  assert.deepEqual(result.error.cycles, [[0, 1]]);
  assert.deepEqual(
    result.error.waits.map((w) => [w.core, w.from, w.tag, w.fromState]),
    [[0, 1, "hello", "waiting"], [1, 0, "hello", "waiting"]],
  );
  assert.deepEqual(result.cores.map((c) => c.state), [
    "deadlocked",
    "deadlocked",
    ...Array(6).fill("done"),
  ]);
  assert.match(result.error.message, /core 0 waits for core 1 \(tag "hello"\)/);
  assert.match(result.error.message, /cycle of 2: 0 -> 1 -> 0/);
  assert.match(result.cores[0].reason!, /waits for core 1/);
});

test("three cores waiting around a triangle form one cycle", () => {
  const result = runProgram(v3_8, function* (core) {
    if (core.id > 2) return;
    yield* core.recv((core.id + 1) % 3, 7);
  });
  assert.ok(result.error instanceof DeadlockError);
  assert.deepEqual(result.error.cycles, [[0, 1, 2]]);
  assert.equal(result.error.waits.length, 3);
});

test("a receive from a core that finished without sending is reported with no cycle", () => {
  const result = runProgram(v3_8, function* (core) {
    if (core.id === 5) yield* core.recv(2, "never");
  });
  assert.ok(result.error instanceof DeadlockError);
  assert.deepEqual(result.error.cycles, []);
  assert.equal(result.error.waits[0].fromState, "done");
  assert.match(result.error.message, /core 5 waits for core 2 \(tag "never"\), which is done/);
  assert.match(result.error.message, /no wait cycle/);
});

test("a waiting core's unreceived messages are listed: a wrong tag is visible", () => {
  const result = runProgram(v3_8, function* (core) {
    if (core.id === 0) yield* core.send(1, undefined, { bytes: 8, tag: "grad" });
    if (core.id === 1) yield* core.recv(0, "grads");
  });
  assert.ok(result.error instanceof DeadlockError);
  assert.deepEqual(result.error.waits[0].unreceived, [{ from: 0, tag: "grad", count: 1 }]);
  assert.match(result.error.message, /holds unreceived messages: 1 from core 0 tag "grad"/);
});

test("the deadlock is reported at the time of the last event", () => {
  const bytes = 1024;
  const result = runProgram(ringTopology(3), function* (core) {
    if (core.id === 0) yield* core.send(1, undefined, { bytes });
    if (core.id === 1) {
      yield* core.recv(0);
      yield* core.recv(2);
    }
  });
  assert.ok(result.error instanceof DeadlockError);
  const arrival = TPU_V3.iciLinkLatency + bytes / TPU_V3.iciLinkBandwidth;
  assert.ok(Math.abs(result.error.time - arrival) < 1e-15);
  assert.equal(result.cores[1].state, "deadlocked");
});

test("2048 cores each waiting on the previous one are one cycle of 2048", () => {
  const pod = sliceTopology("v3-2048");
  const result = runProgram(pod, function* (core) {
    const n = core.coreCount;
    yield* core.recv((core.id + n - 1) % n, "token");
    yield* core.send((core.id + 1) % n, undefined, { bytes: 4, tag: "token" });
  });
  assert.ok(result.error instanceof DeadlockError);
  assert.equal(result.error.cycles.length, 1);
  assert.equal(result.error.cycles[0].length, 2048);
  assert.ok(result.cores.every((c) => c.state === "deadlocked"));
  assert.match(result.error.message, /\.\.\. and 2032 more/);
});

test("expectCompleted turns a deadlocked result into a thrown DeadlockError", () => {
  const result = runProgram(v3_8, function* (core) {
    if (core.id === 0) yield* core.recv(1);
  });
  assert.throws(() => expectCompleted(result), DeadlockError);
});
