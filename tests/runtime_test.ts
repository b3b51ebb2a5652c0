import assert from "node:assert/strict";
import {
  type ActorInspectionEvent,
  type CoreHandle,
  createTopology,
  expectCompleted,
  type Program,
  ProgramError,
  type ProgramGenerator,
  ringTopology,
  runProgram,
  sliceTopology,
  TPU_V3,
  type TraceEvent,
} from "../mod.ts";
import { test } from "./_test.ts";

const LAT = TPU_V3.iciLinkLatency;
const BW = TPU_V3.iciLinkBandwidth;

/** Asserts no two slices on one trace thread overlap; returns the number of threads. */
function assertSlicesNest(trace: readonly TraceEvent[]): number {
  const byThread = new Map<string, { ts: number; end: number }[]>();
  for (const e of trace) {
    if (e.ph !== "X") continue;
    const key = `${e.pid}/${e.tid}`;
    byThread.set(key, [...(byThread.get(key) ?? []), { ts: e.ts!, end: e.ts! + e.dur! }]);
  }
  for (const [thread, slices] of byThread) {
    slices.sort((a, b) => a.ts - b.ts);
    for (let i = 1; i < slices.length; i++) {
      assert.ok(slices[i].ts >= slices[i - 1].end - 1e-9, `overlap on ${thread}`);
    }
  }
  return byThread.size;
}

function assertClose(actual: number, expected: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= 1e-12 * Math.max(1, Math.abs(expected)),
    `${what}: expected ${expected}, got ${actual}`,
  );
}

test("a neighbour message arrives after one hop latency plus bytes over bandwidth", () => {
  const bytes = 8 * 2 ** 20;
  let arrivedAt = NaN;
  const result = runProgram(ringTopology(4), function* (core) {
    if (core.id === 0) yield* core.send(1, undefined, { bytes });
    if (core.id === 1) arrivedAt = (yield* core.recv(0)).arrivedAt;
  });
  assertClose(arrivedAt, LAT + bytes / BW, "arrival");
  assertClose(result.cores[1].clock, LAT + bytes / BW, "receiver clock");
  assertClose(result.cores[1].waitSeconds, LAT + bytes / BW, "receiver wait");
  assert.equal(result.cores[1].state, "done");
});

test("the two cores of a chip talk over the on-chip path, not ICI", () => {
  const bytes = 2 ** 20;
  const result = runProgram(sliceTopology("v3-8"), function* (core) {
    if (core.id === 0) yield* core.send(1, new Uint8Array(bytes));
    if (core.id === 1) yield* core.recv(0);
  });
  assertClose(
    result.cores[1].clock,
    TPU_V3.onChipLatency + bytes / TPU_V3.onChipBandwidth,
    "arrival",
  );
});

test("a message crossing two chips pays two hop latencies and one serialisation", () => {
  const bytes = 4096;
  const v3_8 = sliceTopology("v3-8");
  assert.equal(v3_8.hopCount(0, 6), 2);
  const result = runProgram(v3_8, function* (core) {
    if (core.id === 0) yield* core.send(6, undefined, { bytes });
    if (core.id === 6) yield* core.recv(0);
  });
  assertClose(result.cores[6].clock, 2 * LAT + bytes / BW, "arrival");
});

test("messages that share a link queue behind each other", () => {
  const bytes = 2 ** 20;
  const d = bytes / BW;
  const arrivals: Record<number, number> = {};
  // Core 0 -> 2 crosses links 0->1 and 1->2; core 1 -> 2 needs link 1->2 as well.
  runProgram(ringTopology(6), function* (core) {
    if (core.id === 0 || core.id === 1) yield* core.send(2, undefined, { bytes });
    if (core.id === 2) {
      arrivals[0] = (yield* core.recv(0)).arrivedAt;
      arrivals[1] = (yield* core.recv(1)).arrivedAt;
    }
  });
  assertClose(arrivals[0], 2 * LAT + d, "uncontended two-hop message");
  // Core 0's message holds link 1->2 during [LAT, LAT + d]; core 1's starts after it.
  assertClose(arrivals[1], LAT + d + LAT + d, "contended message");
});

test("back-to-back sends on one link arrive one serialisation apart, in order", () => {
  const bytes = 2 ** 16;
  const seen: [string, number][] = [];
  runProgram(ringTopology(2), function* (core) {
    if (core.id === 0) {
      yield* core.send(1, undefined, { bytes, tag: "a" });
      yield* core.send(1, undefined, { bytes, tag: "a" });
    } else {
      for (let i = 0; i < 2; i++) seen.push(["a", (yield* core.recv(0, "a")).arrivedAt]);
    }
  });
  assertClose(seen[0][1], LAT + bytes / BW, "first");
  assertClose(seen[1][1], LAT + 2 * bytes / BW, "second");
});

test("compute time is the roofline: the larger of FLOPs over peak and bytes over HBM bandwidth", () => {
  const durations: number[] = [];
  const hardware = { ...TPU_V3, f32FlopsFraction: 0.5 };
  runProgram(createTopology({ chips: [1, 1], wrap: [false, false], hardware }), function* (core) {
    if (core.id !== 0) return;
    durations.push(yield* core.compute({ flops: 61.5e9 }));
    durations.push(yield* core.compute({ bytes: 450e6 }));
    durations.push(yield* core.compute({ flops: 61.5e9, bytes: 900e6 }));
    durations.push(yield* core.compute({ flops: 61.5e9, dtype: "f32" }));
    durations.push(yield* core.compute({ flops: 61.5e9, efficiency: 0.25 }));
  });
  [1e-3, 1e-3, 2e-3, 2e-3, 4e-3].forEach((e, i) => assertClose(durations[i], e, `op ${i}`));
});

test("a compute advances the core's clock and counts its FLOPs", () => {
  const result = runProgram(sliceTopology("v3-8"), function* (core) {
    yield* core.compute({ flops: 61.5e9 * (core.id + 1), label: "matmul" });
  });
  result.cores.forEach((c) => assertClose(c.clock, 1e-3 * (c.id + 1), `core ${c.id}`));
  assertClose(result.simulatedSeconds, 8e-3, "run");
  assert.equal(result.totals.flops, 61.5e9 * 36);
});

test("flush holds the core in the sending state until its bytes have left", () => {
  const bytes = 2 ** 24;
  const states: string[] = [];
  const inspect = (e: ActorInspectionEvent) => {
    const ref = e.actorRef as { id?: string };
    const snap = e.snapshot as { value?: string } | undefined;
    if (e.type === "@xstate.snapshot" && ref.id === "core-0" && snap?.value) {
      states.push(snap.value);
    }
  };
  const result = runProgram(ringTopology(2), function* (core) {
    if (core.id === 0) {
      yield* core.send(1, undefined, { bytes });
      yield* core.flush();
    } else yield* core.recv(0);
  }, { inspect });
  // Finishing the instant it resumes, the core goes from sending straight to done.
  assert.deepEqual(states, ["idle", "sending", "done"]);
  assertClose(result.cores[0].sendSeconds, bytes / BW, "flush wait");
  assertClose(result.cores[0].clock, bytes / BW, "sender clock");
  assertClose(result.cores[1].clock, LAT + bytes / BW, "receiver clock");
});

test("a resumed core goes to idle with its ledger update, not through a separate resume", () => {
  const states: string[] = [];
  const inspect = (e: ActorInspectionEvent) => {
    const ref = e.actorRef as { id?: string };
    const snap = e.snapshot as { value?: string } | undefined;
    if (e.type === "@xstate.snapshot" && ref.id === "core-0" && snap?.value) {
      states.push(snap.value);
    }
  };
  const result = runProgram(ringTopology(2), function* (core) {
    if (core.id !== 0) return;
    yield* core.compute({ flops: 61.5e9 });
    yield* core.compute({ flops: 61.5e9 }); // computing -> computing: no idle in between
    yield* core.alloc(8, "buffers"); // computing -> idle: the allocation is the resume
    yield* core.free(8, "buffers"); // idle -> idle
    yield* core.compute({ flops: 61.5e9 });
  }, { inspect });
  assert.deepEqual(states, [
    "idle",
    "computing",
    "computing",
    "idle",
    "idle",
    "computing",
    "done",
  ]);
  assert.equal(result.cores[0].actorEvents, 6);
  assert.equal(result.cores[0].peakBytes.buffers, 8);
  assert.equal(result.cores[0].liveBytes.buffers, 0);
  assertClose(result.cores[0].clock, 3e-3, "clock");
});

test("send returns at once so a core can compute while its message travels", () => {
  const result = runProgram(ringTopology(2), function* (core) {
    if (core.id === 0) {
      yield* core.send(1, undefined, { bytes: 82e6 }); // 1 ms on the wire
      yield* core.compute({ flops: 61.5e9 }); // 1 ms
    } else yield* core.recv(0);
  });
  assertClose(result.cores[0].clock, 1e-3, "sender");
  assertClose(result.cores[1].clock, LAT + 1e-3, "receiver");
});

test("a message that arrived before the receive is returned without waiting", () => {
  let waited = NaN;
  const result = runProgram(ringTopology(2), function* (core) {
    if (core.id === 0) yield* core.send(1, undefined, { bytes: 0, tag: 5 });
    else {
      yield* core.compute({ flops: 61.5e9 });
      const before = core.now();
      const msg = yield* core.recv(0, 5);
      waited = core.now() - before;
      assert.ok(msg.arrivedAt < before);
    }
  });
  assert.equal(waited, 0);
  assert.equal(result.cores[1].waitSeconds, 0);
});

test("receives match on source and tag, and a number tag differs from its string", () => {
  const order: unknown[] = [];
  runProgram(ringTopology(3), function* (core) {
    if (core.id === 0) {
      yield* core.send(2, new Float32Array([1]), { tag: 1 });
      yield* core.send(2, new Float32Array([2]), { tag: "1" });
    } else if (core.id === 1) {
      yield* core.send(2, new Float32Array([3]), { tag: 1 });
    } else {
      for (const [from, tag] of [[0, "1"], [1, 1], [0, 1]] as const) {
        order.push((yield* core.recv<Float32Array>(from, tag)).payload[0]);
      }
    }
  });
  assert.deepEqual(order, [2, 3, 1]);
});

test("a DataView, a Node Buffer and an ArrayBuffer are copied at the send too", () => {
  let got: unknown[] = [];
  runProgram(ringTopology(2), function* (core) {
    if (core.id === 0) {
      const view = new DataView(new ArrayBuffer(4));
      const buffer = new Uint8Array(new ArrayBuffer(8), 4, 2); // a view into a larger buffer
      const raw = new Uint8Array([7]).buffer;
      view.setUint8(0, 1);
      buffer.set([2, 3]);
      for (const payload of [view, buffer, raw]) yield* core.send(1, payload);
      view.setUint8(0, 99);
      buffer.fill(99);
      new Uint8Array(raw).fill(99);
    } else {
      const view = (yield* core.recv<DataView>(0)).payload;
      const buffer = (yield* core.recv<Uint8Array>(0)).payload;
      const raw = (yield* core.recv<ArrayBuffer>(0)).payload;
      got = [view.getUint8(0), [...buffer], buffer.byteLength, new Uint8Array(raw)[0]];
    }
  });
  assert.deepEqual(got, [1, [2, 3], 2, 7]);
});

test("a typed-array payload is copied at the send, as a DMA reads it", () => {
  let got: number[] = [];
  runProgram(ringTopology(2), function* (core) {
    if (core.id === 0) {
      const data = new Float32Array([1, 2, 3]);
      yield* core.send(1, data);
      data.fill(9);
    } else got = [...(yield* core.recv<Float32Array>(0)).payload];
  });
  assert.deepEqual(got, [1, 2, 3]);
});

test("the same program twice gives identical results and traces", () => {
  const program: Program = function* (core) {
    const n = core.coreCount;
    yield* core.alloc(1024 * (core.id + 1), "activations");
    for (let step = 0; step < 3; step++) {
      yield* core.send((core.id + 1 + 5 * step) % n, new Float32Array(64 * (step + 1)), {
        tag: step,
      });
      yield* core.compute({ flops: 1e9 * ((core.id % 3) + 1), bytes: 1e6, label: `layer ${step}` });
    }
    for (let step = 0; step < 3; step++) {
      for (let from = 0; from < n; from++) {
        if ((from + 1 + 5 * step) % n === core.id) yield* core.recv(from, step);
      }
    }
    yield* core.free(1024 * (core.id + 1), "activations");
  };
  const a = runProgram(sliceTopology("v3-32"), program, { trace: true });
  const b = runProgram(sliceTopology("v3-32"), program, { trace: true });
  assert.equal(a.status, "completed");
  assert.equal(JSON.stringify(a), JSON.stringify(b));
  assert.ok(a.trace!.length > 32 * 4);
});

test("the trace has a process per core, compute slices, flows and memory counters", () => {
  const result = runProgram(ringTopology(2), function* (core) {
    yield* core.alloc(256, "weights", "w");
    yield* core.compute({ flops: 61.5e6, label: "matmul" });
    if (core.id === 0) yield* core.send(1, undefined, { bytes: 82_000 });
    else yield* core.recv(0);
  }, { trace: true });
  const trace = result.trace!;
  const names = trace.filter((e) => e.ph === "M" && e.name === "process_name").map((e) => e.pid);
  assert.deepEqual(names, [0, 1]);
  const compute = trace.filter((e) => e.cat === "compute");
  assert.equal(compute.length, 2);
  assertClose(compute[0].dur!, 1, "compute slice in microseconds");
  const flows = trace.filter((e) => e.ph === "s" || e.ph === "f");
  assert.deepEqual(flows.map((e) => [e.ph, e.pid, e.id]), [["s", 0, 0], ["f", 1, 0]]);
  const wait = trace.find((e) => e.cat === "wait")!;
  assert.equal(wait.pid, 1);
  assertClose(wait.ts! + wait.dur!, 1 + 1 + 1, "wait ends at arrival (us)");
  const counters = trace.filter((e) => e.ph === "C");
  assert.deepEqual(counters.map((e) => (e.args as { weights: number }).weights), [256, 256]);
});

test("messages nobody received are reported, and the run lasts until they arrived", () => {
  const result = runProgram(ringTopology(2), function* (core) {
    if (core.id === 0) yield* core.send(1, undefined, { bytes: 82e6, tag: "late" });
  });
  assert.equal(result.status, "completed");
  assert.deepEqual(result.unreceived, [{ to: 1, from: 0, tag: "late", count: 1, bytes: 82e6 }]);
  assertClose(result.simulatedSeconds, LAT + 1e-3, "run time includes the arrival");
  assert.throws(
    () => expectCompleted(result),
    (e: unknown) =>
      e instanceof ProgramError &&
      e.message === 'messages were sent but never received: 1 from core 0 to core 1 tag "late"',
  );
});

test("a short message is not held behind a long one booked earlier for later", () => {
  // A line of 4 single-core chips. The 8 MiB message from the far end books the last link for
  // [2 us, 2 us + 102 us]; the 4-byte message from the neighbour fits before it, whether its
  // sender runs before the long one's (receiver 0: senders 1 and 3) or after (receiver 3).
  const line = createTopology({ chips: [4, 1], wrap: [false, false], coresPerChip: 1 });
  const shortArrival = (receiver: number, far: number, near: number) => {
    let arrival = NaN;
    const result = runProgram(line, function* (core) {
      if (core.id === far) yield* core.send(receiver, undefined, { bytes: 8 * 2 ** 20 });
      if (core.id === near) yield* core.send(receiver, undefined, { bytes: 4 });
      if (core.id === receiver) {
        arrival = (yield* core.recv(near)).arrivedAt;
        yield* core.recv(far);
      }
    }, { trace: true });
    assertSlicesNest(result.trace!);
    return arrival;
  };
  assertClose(shortArrival(3, 0, 2), LAT + 4 / BW, "short sender runs after the long one's");
  assertClose(shortArrival(0, 3, 1), LAT + 4 / BW, "short sender runs before the long one's");
});

test("messages between two cores arrive in the order they were sent", () => {
  // With 1 ms hops, core 0's 1 ms message Y books link 2->3 for [2 ms, 3 ms]. Core 2's 3 ms
  // message A cannot fit before it and goes at 3 ms; its later, tiny message B would fit in
  // [0, 2 ms) and overtake A. The receiver must still get A first.
  const hardware = { ...TPU_V3, iciLinkLatency: 1e-3 };
  const line = createTopology({ chips: [4, 1], wrap: [false, false], coresPerChip: 1, hardware });
  const got: [string, number][] = [];
  const result = runProgram(line, function* (core) {
    if (core.id === 0) yield* core.send(3, undefined, { bytes: 82e6, tag: "y" });
    if (core.id === 2) {
      yield* core.send(3, new Uint8Array(246e6 / 1e3), { tag: "t", bytes: 246e6 });
      yield* core.send(3, new Uint8Array(1), { tag: "t" });
    }
    if (core.id === 3) {
      for (let i = 0; i < 2; i++) {
        const msg = yield* core.recv<Uint8Array>(2, "t");
        got.push([msg.payload.length === 1 ? "B" : "A", msg.arrivedAt]);
      }
      yield* core.recv(0, "y");
    }
  }, { trace: true });
  assert.deepEqual(got.map(([name]) => name), ["A", "B"]);
  assertClose(got[0][1], 7e-3, "A: after Y on link 2->3, then one hop");
  assertClose(got[1][1], 7e-3, "B: held back to A's arrival");
  // The trace shows B's bytes crossing the link when they did, before A's: slices still nest.
  assertSlicesNest(result.trace!);
});

test("the two cores of a chip share its ICI links", () => {
  const bytes = 82e6; // 1 ms on one link
  const arrivals: number[] = [];
  runProgram(sliceTopology("v3-8"), function* (core) {
    if (core.id === 0 || core.id === 1) yield* core.send(core.id + 2, undefined, { bytes });
    if (core.id === 2 || core.id === 3) {
      arrivals[core.id - 2] = (yield* core.recv(core.id - 2)).arrivedAt;
    }
  });
  assertClose(arrivals[0], LAT + 1e-3, "first");
  assertClose(arrivals[1], LAT + 2e-3, "second waits for the chip's +x link");
});

test("trace slices on one thread never overlap, even with traffic in every direction", () => {
  const result = runProgram(sliceTopology("v3-32"), function* (core) {
    const n = core.coreCount;
    for (const step of [1, 2, 5, n - 1]) {
      yield* core.send((core.id + step) % n, new Float32Array(4096), { tag: step });
    }
    yield* core.compute({ flops: 1e9, label: "overlapped" });
    for (const step of [1, 2, 5, n - 1]) yield* core.recv((core.id + n - step) % n, step);
  }, { trace: true });
  assert.ok(assertSlicesNest(result.trace!) > 32 * 3);
  const threadNames = result.trace!.filter((e) => e.name === "thread_name" && e.pid === 0);
  assert.ok(threadNames.some((e) => (e.args as { name: string }).name === "out +x"));
});

test("trace slices do not overlap on chips with four cores either", () => {
  const quad = createTopology({ chips: [2, 1], wrap: [false, false], coresPerChip: 4 });
  const result = runProgram(quad, function* (core) {
    for (let to = 0; to < core.coreCount; to++) {
      if (to !== core.id) yield* core.send(to, new Float32Array(1024), { tag: "all" });
    }
    for (let from = 0; from < core.coreCount; from++) {
      if (from !== core.id) yield* core.recv(from, "all");
    }
  }, { trace: true });
  assertSlicesNest(result.trace!);
});

test("a shift around all 2048 cores of a pod completes with one message per core", () => {
  const result = runProgram(sliceTopology("v3-2048"), function* (core) {
    const n = core.coreCount;
    yield* core.send((core.id + 1) % n, undefined, { bytes: 1024, tag: "shift" });
    yield* core.recv((core.id + n - 1) % n, "shift");
  });
  assert.equal(result.status, "completed");
  assert.equal(result.totals.messages, 2048);
  assert.ok(result.cores.every((c) => c.state === "done" && c.messagesReceived === 1));
});

test("core.call runs a sub-program: its operations reach the runtime and its value or error the caller", () => {
  function* inner(core: CoreHandle, fail: boolean): ProgramGenerator<number> {
    const seconds = yield* core.compute({ flops: 61.5e9 });
    if (fail) throw new Error("inner failed");
    return seconds * 2;
  }
  const got: unknown[] = [];
  const result = runProgram(ringTopology(2), function* (core) {
    if (core.id !== 0) return;
    got.push(yield* core.call(inner(core, false)));
    try {
      yield* core.call(inner(core, true));
    } catch (e) {
      got.push((e as Error).message);
    }
  });
  assert.equal(result.status, "completed");
  assert.deepEqual(got, [2e-3, "inner failed"]);
  assert.equal(result.cores[0].ops, 2); // the two computes: a call is not an operation
  assertClose(result.cores[0].clock, 2e-3, "clock");
  assert.throws(
    () =>
      runProgram(ringTopology(2), function* (core) {
        yield* core.call({} as never);
      }),
    /core 0 at t=0s: call needs a generator/,
  );
});

test("a program that only ever calls empty sub-programs is stopped, not left to hang", () => {
  function* nothing(): ProgramGenerator<void> {}
  assert.throws(
    () =>
      runProgram(ringTopology(2), function* (core) {
        for (;;) yield* core.call(nothing());
      }),
    (e: unknown) => e instanceof ProgramError && /calls in a row ran no operation/.test(e.message),
  );
});
