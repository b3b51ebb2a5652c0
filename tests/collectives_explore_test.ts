// Exhaustive exploration of the collective protocols with exploreProgram: every interleaving of
// their sends and receives reaches the one finished state -- with unbounded channels (the
// runtime's semantics) and with one-message channels -- while deliberately broken ring programs
// written here yield counterexamples whose schedules and waits name the cores and tags.
import assert from "node:assert/strict";
import {
  COLLECTIVE_ALGORITHMS,
  COLLECTIVE_KINDS,
  type CoreHandle,
  exploreProgram,
  type ExploreStep,
  OptionsError,
  planCollective,
  type Program,
  ringTopology,
  torusTopology,
} from "../mod.ts";
import { test } from "./_test.ts";

/** The ring all-reduce of the library, shape-only, as a program. */
function ringAllReduce(n: number, chunks = 1): Program {
  const plan = planCollective(ringTopology(n), {
    kind: "all-reduce",
    algorithm: "ring",
    length: Math.max(2, chunks) * n, // every chunk holds data (empty pieces are not sent)
    chunks,
  });
  return function* (core) {
    yield* plan.run(core);
  };
}

test("the ring all-reduce on 2 to 5 cores explores completely to one finished state", () => {
  // Distinct states (per-core counts of completed sends and receives) with unbounded and with
  // one-message channels. n = 2 by hand: each core sends, receives, sends, receives (S R S R);
  // a core's k-th receive needs the peer's k-th send, so count pairs (a, b) in 0..4 with
  // a >= 2 => b >= 1 and a = 4 => b >= 3 (and symmetrically): 2 + 4 + 3 + 4 + 2 = 15. One-deep
  // channels add a >= 3 => b >= 2 (the second send waits for the first receive): 13.
  const expected = new Map([[2, [15, 13]], [3, [129, 78]], [4, [959, 397]], [5, [6657, 1882]]]);
  for (const [n, [unbounded, oneDeep]] of expected) {
    for (const [channelCapacity, states] of [[Infinity, unbounded], [1, oneDeep]]) {
      const result = exploreProgram(ringTopology(n), ringAllReduce(n), { channelCapacity });
      assert.deepEqual(
        result,
        { states, terminalStates: 1, complete: true, deadlock: undefined },
        `n=${n} capacity ${channelCapacity}`,
      );
    }
  }
});

test("the ring all-reduce relies on buffered sends: under rendezvous every core is stuck on its first send", () => {
  for (const n of [2, 3, 4, 5]) {
    const result = exploreProgram(ringTopology(n), ringAllReduce(n), { channelCapacity: 0 });
    assert.equal(result.states, 1);
    assert.equal(result.terminalStates, 0);
    assert.deepEqual(result.deadlock, {
      schedule: [],
      waits: Array.from({ length: n }, (_, core) => ({
        core,
        kind: "send",
        peer: (core + 1) % n,
        tag: "podsim:ring",
      })),
    });
  }
});

test("with K chunks the ring all-reduce needs K-message channels: K explores clean, K - 1 deadlocks", () => {
  for (const chunks of [2, 3]) {
    const program = ringAllReduce(3, chunks);
    const roomy = exploreProgram(ringTopology(3), program, { channelCapacity: chunks });
    assert.equal(roomy.deadlock, undefined, `${chunks} chunks, capacity ${chunks}`);
    assert.equal(roomy.terminalStates, 1);
    const tight = exploreProgram(ringTopology(3), program, { channelCapacity: chunks - 1 });
    // Every core has posted chunks - 1 pieces and blocks on the next one.
    assert.deepEqual(
      tight.deadlock?.waits,
      [0, 1, 2].map((core) => ({
        core,
        kind: "send",
        peer: (core + 1) % 3,
        tag: "podsim:ring",
      })),
    );
    assert.equal(
      tight.deadlock?.schedule.filter((s) => s.kind === "send").length,
      3 * (chunks - 1),
    );
  }
});

test("every kind and algorithm explores without deadlock on a ring of 4 and a 2x2 torus", () => {
  let explored = 0;
  for (const topology of [ringTopology(4), torusTopology(2, 2)]) {
    for (const kind of COLLECTIVE_KINDS) {
      for (const algorithm of COLLECTIVE_ALGORITHMS) {
        if (kind === "collective-permute" && algorithm !== "direct") continue;
        if (algorithm === "torus" && topology.chipsY === 1) continue;
        const plan = planCollective(topology, { kind, algorithm, length: 8 });
        for (const channelCapacity of [Infinity, 1]) {
          const result = exploreProgram(topology, function* (core) {
            yield* plan.run(core);
          }, { channelCapacity });
          const what = `${kind} ${algorithm} on ${topology.name}, capacity ${channelCapacity}`;
          assert.equal(result.deadlock, undefined, what);
          assert.equal(result.complete, true, what);
          assert.equal(result.terminalStates, 1, what);
          assert.ok(result.states > 4, what);
          explored++;
        }
      }
    }
  }
  assert.equal(explored, 2 * 2 * (5 * 3 + 1) + 2 * 5); // + torus on the 2x2 torus
});

// --- deliberately broken ring programs ---

const next = (core: CoreHandle) => (core.id + 1) % core.coreCount;
const prev = (core: CoreHandle) => (core.id + core.coreCount - 1) % core.coreCount;

/**
 * A ring pass of `steps` steps written the way the library does it (send step s, then receive
 * step s), with a defect from step `at` on: "recv-first" receives step s before sending it;
 * "wrong-neighbour" sends step s to the previous core; "wrong-tag" sends step s tagged s + 1.
 */
function ringPass(
  steps: number,
  defect: "none" | "recv-first" | "wrong-neighbour" | "wrong-tag",
  at: number,
): Program {
  return function* (core) {
    for (let s = 0; s < steps; s++) {
      const broken = s >= at ? defect : "none";
      const to = broken === "wrong-neighbour" ? prev(core) : next(core);
      const tag = `step ${broken === "wrong-tag" ? s + 1 : s}`;
      if (broken === "recv-first") yield* core.recv(prev(core), `step ${s}`);
      yield* core.send(to, undefined, { bytes: 4, tag });
      if (broken !== "recv-first") yield* core.recv(prev(core), `step ${s}`);
    }
  };
}

/** Checks a schedule is a valid interleaving: each receive follows the matching send. */
function assertValidSchedule(schedule: readonly ExploreStep[]): void {
  const sent = new Map<string, number>();
  const taken = new Map<string, number>();
  for (const step of schedule) {
    if (step.kind === "send") {
      const key = `${step.core}->${step.peer} ${String(step.tag)}`;
      sent.set(key, (sent.get(key) ?? 0) + 1);
    } else if (step.kind === "recv") {
      const key = `${step.peer}->${step.core} ${String(step.tag)}`;
      taken.set(key, (taken.get(key) ?? 0) + 1);
      assert.ok((taken.get(key) ?? 0) <= (sent.get(key) ?? 0), `receive before send: ${key}`);
    }
  }
}

test("the correct hand-written ring pass explores clean, so the defects below are what break it", () => {
  for (const n of [3, 4]) {
    const result = exploreProgram(ringTopology(n), ringPass(3, "none", 0), { channelCapacity: 1 });
    assert.equal(result.deadlock, undefined);
    assert.equal(result.terminalStates, 1);
  }
});

test("a ring pass that receives step 2 before sending it: the counterexample runs steps 0 and 1, then every core waits on its left neighbour's step 2", () => {
  const n = 4;
  const result = exploreProgram(ringTopology(n), ringPass(3, "recv-first", 2));
  assert.equal(result.terminalStates, 0);
  const { schedule, waits } = result.deadlock!;
  assert.deepEqual(
    waits,
    [0, 1, 2, 3].map((core) => ({
      core,
      kind: "recv",
      peer: (core + n - 1) % n,
      tag: "step 2",
    })),
  );
  // Each core sent and received steps 0 and 1: 4 moves each, 16 in all (a shortest schedule).
  assert.equal(schedule.length, 16);
  for (let core = 0; core < n; core++) {
    assert.deepEqual(
      schedule.filter((s) => s.core === core).map((s) => `${s.kind} ${s.peer} ${String(s.tag)}`),
      [
        `send ${(core + 1) % n} step 0`,
        `recv ${(core + n - 1) % n} step 0`,
        `send ${(core + 1) % n} step 1`,
        `recv ${(core + n - 1) % n} step 1`,
      ],
    );
  }
  assertValidSchedule(schedule);
});

test("a ring pass whose last step goes to the wrong neighbour: every core waits for step 1 from its left, which sent it back left instead", () => {
  const n = 3;
  const result = exploreProgram(ringTopology(n), ringPass(2, "wrong-neighbour", 1));
  const { schedule, waits } = result.deadlock!;
  assert.deepEqual(waits, [
    { core: 0, kind: "recv", peer: 2, tag: "step 1" },
    { core: 1, kind: "recv", peer: 0, tag: "step 1" },
    { core: 2, kind: "recv", peer: 1, tag: "step 1" },
  ]);
  // The last sends in the schedule go to the previous core.
  for (let core = 0; core < n; core++) {
    const sends = schedule.filter((s) => s.core === core && s.kind === "send");
    assert.deepEqual(sends.map((s) => [s.peer, s.tag]), [
      [(core + 1) % n, "step 0"],
      [(core + n - 1) % n, "step 1"],
    ]);
  }
  assert.equal(schedule.length, 3 * n);
  assertValidSchedule(schedule);
});

test("a ring pass whose last step sends the wrong tag: every core waits for a tag that was sent as another", () => {
  const n = 5;
  for (const channelCapacity of [Infinity, 1]) {
    const result = exploreProgram(ringTopology(n), ringPass(3, "wrong-tag", 2), {
      channelCapacity,
    });
    const { schedule, waits } = result.deadlock!;
    assert.deepEqual(
      waits,
      Array.from({ length: n }, (_, core) => ({
        core,
        kind: "recv",
        peer: (core + n - 1) % n,
        tag: "step 2",
      })),
    );
    // What was sent instead: step 3 on every ring link.
    const last = schedule.filter((s) => s.kind === "send" && s.tag === "step 3");
    assert.deepEqual(last.map((s) => s.core).sort(), [0, 1, 2, 3, 4]);
    assert.equal(schedule.filter((s) => s.tag === "step 2").length, 0);
    assert.equal(schedule.length, 5 * n);
    assertValidSchedule(schedule);
  }
});

test("a library collective joined by all but one core is found stuck by the explorer too", () => {
  const ring = ringTopology(3);
  const plan = planCollective(ring, { kind: "all-gather", algorithm: "ring", length: 3 });
  const result = exploreProgram(ring, function* (core) {
    if (core.id !== 1) yield* plan.run(core);
  });
  // Core 2 waits for core 1, which is done; core 0 gets core 2's first block and then waits
  // for the forward core 2 can never make.
  assert.deepEqual(result.deadlock?.waits, [
    { core: 0, kind: "recv", peer: 2, tag: "podsim:ring" },
    { core: 2, kind: "recv", peer: 1, tag: "podsim:ring" },
  ]);
  assert.deepEqual(result.deadlock?.schedule, [
    { core: 0, kind: "send", peer: 1, tag: "podsim:ring" },
    { core: 2, kind: "send", peer: 0, tag: "podsim:ring" },
    { core: 0, kind: "recv", peer: 2, tag: "podsim:ring" },
    { core: 0, kind: "send", peer: 1, tag: "podsim:ring" },
  ]);
});

test("bad explorer options are refused before anything runs", () => {
  assert.throws(
    () => exploreProgram(ringTopology(2), ringAllReduce(2), { channelCapacity: -1 }),
    (e: unknown) =>
      e instanceof OptionsError && /channelCapacity must be an integer >= 0/.test(e.message),
  );
});
