/**
 * Runtime figures (deno bench --v8-flags=--expose-gc bench/runtime_bench.ts):
 * - message deliveries per second with 2048 core actors (neighbour shifts on the v3-2048 torus);
 * - memory per idle core (the core actor plus the runtime's per-core state);
 * - wall time to detect and report a 2048-core deadlock;
 * - why the cores run compiled logic: one event through xstate's interpreter vs the table.
 *
 * Deno.bench reports time per iteration; the derived figures (deliveries/s, bytes per core)
 * are printed when the bench process ends.
 */

import { createActor } from "../src/_xstate.ts";
import { coreLogic, coreMachine } from "../src/actors/core_machine.ts";
import { type Program, runProgram, sliceTopology, type Topology, torusTopology } from "../mod.ts";

const pod = sliceTopology("v3-2048");
const ROUNDS = 100;
const DELIVERIES = pod.coreCount * ROUNDS;

/** The ids of a core's +x, -x, +y and -y neighbours on the pod torus (same core index). */
function torusNeighbours(id: number): number[] {
  const { x, y, core } = pod.coreCoord(id);
  const X = pod.chipsX;
  const Y = pod.chipsY;
  return [
    pod.coreId({ x: (x + 1) % X, y, core }),
    pod.coreId({ x: (x + X - 1) % X, y, core }),
    pod.coreId({ x, y: (y + 1) % Y, core }),
    pod.coreId({ x, y: (y + Y - 1) % Y, core }),
  ];
}

/**
 * Every core passes 1 KiB to its +x neighbour and waits for its -x neighbour's, ROUNDS times:
 * the worst case, every delivery wakes a waiting core (a wait event per delivery; the resume
 * goes with the next wait).
 */
const shift: Program = function* (core) {
  const [right, left] = torusNeighbours(core.id);
  for (let i = 0; i < ROUNDS; i++) {
    yield* core.send(right, undefined, { bytes: 1024, tag: i });
    yield* core.recv(left, i);
  }
};

/** Every core sends 1 KiB to each of its 4 torus neighbours, then receives from each. */
const halo: Program = function* (core) {
  const neighbours = torusNeighbours(core.id);
  for (let i = 0; i < ROUNDS / 4; i++) {
    for (const n of neighbours) yield* core.send(n, undefined, { bytes: 1024, tag: i });
    for (const n of neighbours) yield* core.recv(n, i);
  }
};

/** Every core waits for the previous one before sending: a 2048-core wait cycle. */
const ringDeadlock: Program = function* (core) {
  const n = core.coreCount;
  yield* core.recv((core.id + n - 1) % n, "token");
  yield* core.send((core.id + 1) % n, undefined, { bytes: 4, tag: "token" });
};

// Measured runs only: the first WARMUP runs of each bench let the JIT settle.
const WARMUP = 3;
const seconds: Record<string, number[]> = {
  shift: [],
  halo: [],
  deadlock: [],
  shift64: [],
  allToAll512: [],
  ledger: [],
};
function timed(
  kind: string,
  program: Program,
  expect: (status: string, messages: number) => boolean,
  topology: Topology = pod,
) {
  return () => {
    const t0 = performance.now();
    const result = runProgram(topology, program);
    seconds[kind].push((performance.now() - t0) / 1000);
    if (!expect(result.status, result.totals.messages)) {
      throw new Error(`${kind}: unexpected result`);
    }
  };
}
const options = { n: 12, warmup: WARMUP };
Deno.bench(
  `runtime: v3-2048 neighbour shift, ${DELIVERIES} deliveries, each wakes its core`,
  options,
  timed("shift", shift, (s, m) => s === "completed" && m === DELIVERIES),
);
Deno.bench(
  `runtime: v3-2048 halo exchange with 4 torus neighbours, ${DELIVERIES} deliveries`,
  options,
  timed("halo", halo, (s, m) => s === "completed" && m === DELIVERIES),
);
Deno.bench(
  "runtime: detect and report a 2048-core deadlock",
  options,
  timed("deadlock", ringDeadlock, (s) => s === "deadlocked"),
);

// The same deliveries on 64 cores: how much of the 2048-core cost is the larger working set.
const ring64 = torusTopology(8, 8);
const shift64: Program = function* (core) {
  const n = core.coreCount;
  for (let i = 0; i < DELIVERIES / n; i++) {
    yield* core.send((core.id + 1) % n, undefined, { bytes: 1024, tag: i });
    yield* core.recv((core.id + n - 1) % n, i);
  }
};
Deno.bench(
  `runtime: 8x8 torus neighbour shift, ${DELIVERIES} deliveries on 64 cores`,
  options,
  timed("shift64", shift64, (s, m) => s === "completed" && m === DELIVERIES, ring64),
);

// Direct all-to-all over multi-hop routes: the link calendar's heaviest case.
const v3_512 = sliceTopology("v3-512");
const ALL_TO_ALL = 512 * 511;
const allToAll: Program = function* (core) {
  const n = core.coreCount;
  for (let d = 1; d < n; d++) yield* core.send((core.id + d) % n, undefined, { bytes: 65536 });
  for (let d = 1; d < n; d++) yield* core.recv((core.id + n - d) % n);
};
Deno.bench(
  `runtime: v3-512 direct all-to-all, 64 KiB to every core, ${ALL_TO_ALL} messages`,
  { n: 4, warmup: 1 },
  timed("allToAll512", allToAll, (s, m) => s === "completed" && m === ALL_TO_ALL, v3_512),
);

// What a partitioned program does per graph node on every core: allocate the result, compute,
// free an input. The per-node cost of a paper-scale step (examples/paper_scale.ts).
const NODE_STEPS = 300;
const LEDGER_OPS = pod.coreCount * NODE_STEPS * 3;
const nodeSteps: Program = function* (core) {
  for (let i = 0; i < NODE_STEPS; i++) {
    yield core.alloc(1024, "activations", "out");
    yield core.compute({ flops: 1e6, bytes: 1e4, label: "op" });
    yield core.free(1024, "activations", "out");
  }
};
Deno.bench(
  `runtime: v3-2048, ${NODE_STEPS} x (alloc, compute, free) per core, ${LEDGER_OPS} operations`,
  options,
  timed("ledger", nodeSteps, (s) => s === "completed"),
);

const machineActor = createActor(coreMachine, { input: { id: 0, budget: 1 } }).start();
const compiledActor = createActor(coreLogic, { input: { id: 0, budget: 1 } }).start();
Deno.bench(
  "core actor event: xstate interpreter (coreMachine), wait + resume",
  { group: "actor" },
  () => {
    machineActor.send({ type: "RECV_WAIT", at: 0, from: 1, tag: 0 });
    machineActor.send({ type: "RESUME", at: 0 });
  },
);
Deno.bench("core actor event: compiled table (coreLogic), wait + resume", {
  group: "actor",
  baseline: true,
}, () => {
  compiledActor.send({ type: "RECV_WAIT", at: 0, from: 1, tag: 0 });
  compiledActor.send({ type: "RESUME", at: 0 });
});

/** Heap bytes per core of a 2048-core runtime whose cores are all blocked, idle, at start. */
function idleBytesPerCore(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = Deno.memoryUsage().heapUsed;
  let during = 0;
  const result = runProgram(pod, function* (core) {
    // The last core to start sees every core's actor, program and mailbox allocated.
    if (core.id === pod.coreCount - 1) {
      gc?.();
      during = Deno.memoryUsage().heapUsed;
    }
    yield* core.recv((core.id + 1) % pod.coreCount, "never");
  });
  if (result.status !== "deadlocked") throw new Error("expected every core to wait");
  return (during - before) / pod.coreCount;
}

const median = (xs: number[]) => {
  const measured = xs.slice(WARMUP).sort((a, b) => a - b);
  return measured[Math.floor(measured.length / 2)];
};
globalThis.addEventListener("unload", () => {
  const gcNote = (globalThis as { gc?: unknown }).gc
    ? ""
    : " (run with --v8-flags=--expose-gc for a GC'd figure)";
  for (const [kind, cores] of [["shift", 2048], ["halo", 2048], ["shift64", 64]] as const) {
    if (seconds[kind].length > WARMUP) {
      const rate = DELIVERIES / median(seconds[kind]);
      const best = DELIVERIES / Math.min(...seconds[kind].slice(WARMUP));
      console.log(
        `${kind}: ${rate.toFixed(0)} deliveries/s with ${cores} core actors (median; best run ` +
          `${best.toFixed(0)})`,
      );
    }
  }
  if (seconds.ledger.length > WARMUP) {
    const rate = LEDGER_OPS / median(seconds.ledger);
    console.log(`node steps: ${(rate / 1e6).toFixed(2)}M operations/s (alloc, compute, free)`);
  }
  if (seconds.allToAll512.length > 1) {
    const measured = seconds.allToAll512.slice(1).sort((a, b) => a - b);
    const s = measured[measured.length >> 1];
    console.log(
      `v3-512 direct all-to-all: ${s.toFixed(2)} s, ${(ALL_TO_ALL / s).toFixed(0)} msg/s`,
    );
  }
  if (seconds.deadlock.length > WARMUP) {
    const ms = median(seconds.deadlock) * 1000;
    console.log(`2048-core deadlock detected and reported in ${ms.toFixed(1)} ms (median)`);
  }
  const kib = idleBytesPerCore() / 1024;
  console.log(`memory per idle core (actor + runtime state): ${kib.toFixed(2)} KiB${gcNote}`);
});
