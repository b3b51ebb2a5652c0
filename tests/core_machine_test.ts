import assert from "node:assert/strict";
import { createActor, transition } from "../src/_xstate.ts";
import {
  applyCoreEvent,
  type CoreEvent,
  coreLogic,
  coreMachine,
  createCoreActor,
  initialCoreContext,
} from "../src/actors/core_machine.ts";
import { readTransitionTable } from "../src/actors/compiled_machine.ts";
import { CORE_STATES, isFinalCoreState } from "../mod.ts";
import { getAdjacencyMap, getShortestPaths, getSimplePaths } from "./_deps.ts";
import { test } from "./_test.ts";

// One sample of every event the core accepts; enough to drive every transition.
const EVENTS: CoreEvent[] = [
  { type: "COMPUTE", at: 1, label: "matmul" },
  { type: "SEND_WAIT", at: 1, label: "flush" },
  { type: "RECV_WAIT", at: 1, from: 2, tag: "x" },
  { type: "RESUME", at: 2 },
  { type: "ALLOC", at: 1, bytes: 64, category: "weights" },
  { type: "FREE", at: 1, bytes: 0, category: "weights" },
  { type: "FINISH", at: 3 },
  { type: "OUT_OF_MEMORY", at: 1, reason: "too big" },
  { type: "DEADLOCK", at: 1, reason: "stuck" },
  { type: "FAIL", at: 1, reason: "threw" },
];
const input = { id: 0, budget: 1024 };
// States are told apart by value only: the context (clock, ledger) would make the graph infinite.
const serializeState = (s: { value: unknown }) => String(s.value);

test("the core machine has the eight states of the design and reaches every one", () => {
  assert.deepEqual([...CORE_STATES].sort(), [
    "computing",
    "deadlocked",
    "done",
    "failed",
    "idle",
    "out_of_memory",
    "sending",
    "waiting",
  ]);
  const paths = getShortestPaths(coreMachine, { events: EVENTS, input, serializeState });
  const reached = new Set(paths.map((p) => p.state.value as string));
  assert.deepEqual([...reached].sort(), [...CORE_STATES].sort());
});

test("the shortest way to each failure state passes through the state it must", () => {
  const paths = getShortestPaths(coreMachine, { events: EVENTS, input, serializeState });
  const route = (state: string) =>
    paths.find((p) => p.state.value === state)!.steps.map((s) => s.state.value);
  assert.deepEqual(route("deadlocked").slice(-2), ["waiting", "deadlocked"]);
  assert.deepEqual(route("out_of_memory").slice(-2), ["idle", "out_of_memory"]);
  assert.deepEqual(route("done").slice(-2), ["idle", "done"]);
});

test("only a waiting core can deadlock; only an idle one can run out of memory or fail", () => {
  const { table } = readTransitionTable(coreMachine);
  for (const [state, row] of table) {
    assert.equal(row.get("DEADLOCK") === "deadlocked", state === "waiting", state);
    assert.equal(row.get("OUT_OF_MEMORY") === "out_of_memory", state === "idle", state);
    assert.equal(row.get("FAIL") === "failed", state === "idle", state);
  }
});

test("final states accept no event at all", () => {
  for (const state of CORE_STATES.filter(isFinalCoreState)) {
    const snapshot = coreMachine.resolveState({ value: state, context: initialCoreContext(input) });
    for (const event of EVENTS) {
      const [next] = transition(coreMachine, snapshot, event);
      assert.equal(next.value, state, `${state} on ${event.type}`);
    }
  }
});

test("from every state the machine can still reach a final state: it can always end", () => {
  const { table, finals } = readTransitionTable(coreMachine);
  for (const start of CORE_STATES) {
    const seen = new Set<string>([start]);
    const queue = [start as string];
    while (queue.length > 0) {
      for (const target of table.get(queue.shift()!)!.values()) {
        if (seen.has(target)) continue;
        seen.add(target);
        queue.push(target);
      }
    }
    assert.ok([...seen].some((s) => finals.has(s)), `${start} cannot reach a final state`);
  }
});

test("simple paths from idle reach each of the four final states", () => {
  const paths = getSimplePaths(coreMachine, {
    events: EVENTS,
    input,
    serializeState,
    toState: (s) => isFinalCoreState(s.value as never),
  });
  const ends = new Set(paths.map((p) => p.state.value));
  assert.deepEqual([...ends].sort(), ["deadlocked", "done", "failed", "out_of_memory"]);
});

test("the compiled logic agrees with the xstate machine on every state and event", () => {
  for (const state of CORE_STATES) {
    for (const event of EVENTS) {
      const context = { ...initialCoreContext(input), clock: 0.5 };
      const machineNext = transition(
        coreMachine,
        coreMachine.resolveState({ value: state, context }),
        event,
      )[0];
      const compiledNext = coreLogic.transition(
        {
          status: isFinalCoreState(state) ? "done" : "active",
          output: undefined,
          error: undefined,
          value: state,
          context,
        },
        event,
        {} as never,
      );
      const label = `${state} on ${event.type}`;
      assert.equal(compiledNext.value, machineNext.value, label);
      assert.deepEqual(compiledNext.context, machineNext.context, label);
      assert.equal(compiledNext.status, machineNext.status, label);
    }
  }
});

test("the compiled logic has the same state graph as the machine", () => {
  type Edges = Record<string, Record<string, string>>;
  const edges = (
    map: Record<string, { transitions: Record<string, { state: { value: unknown } }> }>,
  ): Edges =>
    Object.fromEntries(
      Object.entries(map).map(([state, v]) => [
        state,
        Object.fromEntries(
          Object.entries(v.transitions).map(([e, t]) => [e, String(t.state.value)]),
        ),
      ]),
    );
  const byValue = (s: { value: unknown }) => String(s.value);
  const compiled = getAdjacencyMap(coreLogic as never, {
    events: EVENTS,
    input,
    serializeState: byValue as never,
  });
  const machine = getAdjacencyMap(coreMachine, {
    events: EVENTS,
    input,
    serializeState: byValue as never,
  });
  assert.deepEqual(edges(compiled as never), edges(machine as never));
  assert.equal(Object.keys(edges(machine as never)).length, CORE_STATES.length);
});

test("a core actor keeps its clock and ledger in its context", () => {
  const core = createCoreActor(7, 1000);
  core.send({ type: "ALLOC", at: 0.25, bytes: 600, category: "activations" });
  core.send({ type: "ALLOC", at: 0.5, bytes: 300, category: "weights" });
  core.send({ type: "FREE", at: 0.75, bytes: 600, category: "activations" });
  const { value, context } = core.getSnapshot();
  assert.equal(value, "idle");
  assert.equal(context.id, 7);
  assert.equal(context.clock, 0.75);
  assert.equal(context.ledger.live.activations, 0);
  assert.equal(context.ledger.peak.activations, 600);
  assert.equal(context.ledger.liveTotal, 300);
  assert.equal(context.ledger.peakTotal, 900);
});

test("an event that does not apply in the current state is ignored", () => {
  const core = createCoreActor(0, 10);
  core.send({ type: "RESUME", at: 5 });
  assert.equal(core.getSnapshot().value, "idle");
  assert.equal(core.getSnapshot().context.clock, 0);
});

test("a waiting core remembers what it waits for until it resumes", () => {
  const core = createCoreActor(1, 10);
  core.send({ type: "RECV_WAIT", at: 1, from: 4, tag: 9 });
  assert.deepEqual(core.getSnapshot().context.waitingFor, { from: 4, tag: 9 });
  core.send({ type: "RESUME", at: 2 });
  assert.equal(core.getSnapshot().context.waitingFor, undefined);
  assert.equal(core.getSnapshot().context.clock, 2);
});

test("reaching a final state marks the actor's snapshot done", () => {
  const core = createActor(coreLogic, { input }).start();
  core.send({ type: "FINISH", at: 1 });
  assert.equal(core.getSnapshot().status, "done");
  assert.equal(core.getSnapshot().value, "done");
});

test("applyCoreEvent returns a new context and leaves the old one untouched", () => {
  const before = initialCoreContext(input);
  const after = applyCoreEvent(before, { type: "ALLOC", at: 1, bytes: 8, category: "buffers" });
  assert.equal(before.ledger.live.buffers, 0);
  assert.equal(after.ledger.live.buffers, 8);
});

test("a waiting core that resumes by allocating is idle and waits for nothing", () => {
  const core = createActor(coreLogic, { input }).start();
  core.send({ type: "RECV_WAIT", at: 1, from: 1, tag: "t" });
  assert.deepEqual(core.getSnapshot().context.waitingFor, { from: 1, tag: "t" });
  core.send({ type: "ALLOC", at: 2, bytes: 8, category: "buffers" });
  assert.equal(core.getSnapshot().value, "idle");
  assert.equal(core.getSnapshot().context.waitingFor, undefined);
});
