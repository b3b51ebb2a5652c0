/**
 * The TPU core as a state machine. `coreMachine` is the specification (an xstate statechart,
 * enumerated by the tests with `xstate/graph`); `coreLogic` is the same machine compiled to a
 * transition table, which the runtime's actors run (see compiled_machine.ts for why).
 *
 * ```
 *            COMPUTE            SEND_WAIT            RECV_WAIT
 *   idle ───────────▶ computing  idle ─────▶ sending  idle ─────▶ waiting ──DEADLOCK──▶ deadlocked
 *    ▲  ◀── RESUME ──┘            ▲ ◀─ RESUME ─┘       ▲ ◀─ RESUME ─┘
 *    ├─ ALLOC / FREE (ledger)      idle ─FINISH─▶ done    idle ─OUT_OF_MEMORY─▶ out_of_memory
 *    └─ idle ─FAIL─▶ failed (the program threw or asked for something impossible)
 * ```
 *
 * A blocked core (computing, sending, waiting) that resumes and at the same simulated instant
 * blocks again or finishes takes COMPUTE / SEND_WAIT / RECV_WAIT / FINISH straight from its
 * blocked state: its idle visit would last no simulated time, and skipping it halves the actor
 * events of a collective's step. Likewise a core that resumes to allocate or free takes ALLOC /
 * FREE from its blocked state to idle (the ledger update is the resume).
 *
 * @module
 */

import {
  type Actor,
  type ActorLogic,
  type AnyActorRef,
  assign,
  createActor,
  setup,
} from "../_xstate.ts";
import {
  type CompiledSnapshot,
  compileFlatMachine,
  readTransitionTable,
} from "./compiled_machine.ts";
import {
  allocate,
  emptyLedger,
  type MemoryCategory,
  type MemoryLedger,
  release,
} from "./memory_ledger.ts";

/** A message tag: receivers match on (source core, tag). */
export type Tag = string | number;

/** The states of a core. The last four are final. */
export type CoreStateName =
  | "idle"
  | "computing"
  | "sending"
  | "waiting"
  | "done"
  | "out_of_memory"
  | "deadlocked"
  | "failed";

/** What a waiting core waits for. */
export interface WaitTarget {
  /** The core it expects a message from. */
  readonly from: number;
  /** The tag it expects. */
  readonly tag: Tag;
}

/** The core actor's context: its simulated clock, memory ledger and why it stopped. */
export interface CoreContext {
  /** Device id. */
  readonly id: number;
  /** Simulated time of the core's last transition, seconds. */
  readonly clock: number;
  /** Memory by category against the HBM budget. */
  readonly ledger: MemoryLedger;
  /** While waiting: the (source, tag) it waits on. */
  readonly waitingFor: WaitTarget | undefined;
  /** Why the core reached a failure state. */
  readonly reason: string | undefined;
}

/** Input of a core actor. */
export interface CoreInput {
  /** Device id. */
  readonly id: number;
  /** HBM budget in bytes. */
  readonly budget: number;
}

/** Events a core actor accepts. Every event carries the simulated time `at`. */
export type CoreEvent =
  | { readonly type: "COMPUTE"; readonly at: number; readonly label: string }
  | { readonly type: "SEND_WAIT"; readonly at: number; readonly label: string }
  | { readonly type: "RECV_WAIT"; readonly at: number; readonly from: number; readonly tag: Tag }
  | { readonly type: "RESUME"; readonly at: number }
  | {
    readonly type: "ALLOC" | "FREE";
    readonly at: number;
    readonly bytes: number;
    readonly category: MemoryCategory;
  }
  | { readonly type: "FINISH"; readonly at: number }
  | {
    readonly type: "OUT_OF_MEMORY" | "DEADLOCK" | "FAIL";
    readonly at: number;
    readonly reason: string;
  };

/** The context a new core starts with. */
export function initialCoreContext(input: CoreInput): CoreContext {
  return context(input.id, 0, emptyLedger(input.budget), undefined, undefined);
}

// Every context is built by this one literal, so all contexts share one object shape: the
// runtime sends an event or two per delivered message and a megamorphic spread was its top cost.
function context(
  id: number,
  clock: number,
  ledger: MemoryLedger,
  waitingFor: WaitTarget | undefined,
  reason: string | undefined,
): CoreContext {
  return { id, clock, ledger, waitingFor, reason };
}

/**
 * The one context update every transition runs. Pure: a new context each time. The runtime
 * checks budgets and frees before sending ALLOC / FREE, so this never sees a bad ledger.
 */
export function applyCoreEvent(c: CoreContext, event: CoreEvent): CoreContext {
  switch (event.type) {
    case "COMPUTE":
    case "SEND_WAIT":
    case "RESUME":
    case "FINISH":
      return context(c.id, event.at, c.ledger, undefined, c.reason);
    case "RECV_WAIT":
      return context(c.id, event.at, c.ledger, { from: event.from, tag: event.tag }, c.reason);
    // A core allocates or frees only when idle, or resuming to idle (so no longer waiting).
    case "ALLOC":
      return context(
        c.id,
        event.at,
        allocate(c.ledger, event.category, event.bytes),
        undefined,
        c.reason,
      );
    case "FREE":
      return context(
        c.id,
        event.at,
        release(c.ledger, event.category, event.bytes),
        undefined,
        c.reason,
      );
    case "OUT_OF_MEMORY":
    case "DEADLOCK":
    case "FAIL":
      return context(c.id, event.at, c.ledger, c.waitingFor, event.reason);
  }
}

const record = "record" as const;

/** From a blocked state: resumed, ran for no simulated time, and blocked again or finished. */
const reblock = {
  COMPUTE: { target: "computing", actions: record },
  SEND_WAIT: { target: "sending", actions: record },
  RECV_WAIT: { target: "waiting", actions: record },
  FINISH: { target: "done", actions: record },
  // Resumed and allocating or freeing at once: the ledger update is the resume.
  ALLOC: { target: "idle", actions: record },
  FREE: { target: "idle", actions: record },
} as const;

const coreSetup = setup({
  types: {} as { context: CoreContext; events: CoreEvent; input: CoreInput },
  actions: { [record]: assign(({ context, event }) => applyCoreEvent(context, event)) },
});

/** The type of {@linkcode coreLogic}: xstate actor logic with core snapshots. */
export type CoreLogic = ActorLogic<
  CompiledSnapshot<CoreStateName, CoreContext>,
  CoreEvent,
  CoreInput
>;

/**
 * The core state machine, the specification of a TPU core's life.
 *
 * @example
 * ```ts
 * import { coreMachine } from "./core_machine.ts";
 * import { createActor } from "npm:xstate@5.33.3";
 * const core = createActor(coreMachine, { input: { id: 0, budget: 1024 } }).start();
 * core.send({ type: "COMPUTE", at: 0, label: "matmul" });
 * console.log(core.getSnapshot().value); // "computing"
 * ```
 */
export const coreMachine = coreSetup.createMachine({
  id: "core",
  context: ({ input }) => initialCoreContext(input),
  initial: "idle",
  states: {
    idle: {
      on: {
        COMPUTE: { target: "computing", actions: record },
        SEND_WAIT: { target: "sending", actions: record },
        RECV_WAIT: { target: "waiting", actions: record },
        ALLOC: { actions: record },
        FREE: { actions: record },
        FINISH: { target: "done", actions: record },
        OUT_OF_MEMORY: { target: "out_of_memory", actions: record },
        FAIL: { target: "failed", actions: record },
      },
    },
    // A program only runs (and so can only throw) while its core is idle. A core that resumes
    // and blocks again (or finishes) at the same simulated instant may skip the zero-length idle
    // visit: the blocking event arrives straight from the blocked state.
    computing: { on: { RESUME: { target: "idle", actions: record }, ...reblock } },
    sending: { on: { RESUME: { target: "idle", actions: record }, ...reblock } },
    waiting: {
      on: {
        RESUME: { target: "idle", actions: record },
        ...reblock,
        DEADLOCK: { target: "deadlocked", actions: record },
      },
    },
    done: { type: "final" },
    out_of_memory: { type: "final" },
    deadlocked: { type: "final" },
    failed: { type: "final" },
  },
});

/**
 * {@linkcode coreMachine} compiled to its transition table: the logic every simulated core
 * runs. Same states, events and context updates; about 40-50x cheaper per event
 * (bench/runtime_bench.ts).
 *
 * @example
 * ```ts
 * import { coreLogic } from "./core_machine.ts";
 * import { createActor } from "npm:xstate@5.33.3";
 * const core = createActor(coreLogic, { input: { id: 3, budget: 1024 } }).start();
 * core.send({ type: "RECV_WAIT", at: 1e-6, from: 2, tag: "x" });
 * console.log(core.getSnapshot().value); // "waiting"
 * ```
 */
export const coreLogic: CoreLogic = compileFlatMachine<
  CoreStateName,
  CoreContext,
  CoreEvent,
  CoreInput
>(
  coreMachine,
  applyCoreEvent,
  initialCoreContext,
);

/** A running core actor (compiled logic). */
export type CoreActor = Actor<typeof coreLogic>;

/**
 * Creates and starts the actor of core `id` with an HBM budget. Pass the pod actor as
 * `parent` so that all cores share one xstate system (one inspection stream, and no
 * per-core system objects on the hot path).
 *
 * @example
 * ```ts
 * import { createCoreActor } from "./core_machine.ts";
 * const core = createCoreActor(0, 16 * 2 ** 30);
 * console.log(core.getSnapshot().value); // "idle"
 * ```
 */
export function createCoreActor(id: number, budget: number, parent?: AnyActorRef): CoreActor {
  return createActor(coreLogic, { input: { id, budget }, parent, id: `core-${id}` }).start();
}

/**
 * Every state of a core, read from the machine (which itself is internal): idle, computing,
 * sending, waiting, done, out_of_memory, deadlocked, failed.
 *
 * @example
 * ```ts
 * import { CORE_STATES } from "@podsim/podsim";
 * console.log(CORE_STATES.includes("deadlocked")); // true
 * ```
 */
export const CORE_STATES: readonly CoreStateName[] = Object.freeze(
  Object.keys(coreMachine.root.states) as CoreStateName[],
);

// The machine's final states, read from the machine rather than listed again.
const FINAL_STATES = readTransitionTable(coreMachine).finals;

/**
 * True for the states a core never leaves: done, out_of_memory, deadlocked, failed.
 *
 * @example
 * ```ts
 * import { isFinalCoreState } from "@podsim/podsim";
 * console.log(isFinalCoreState("waiting"), isFinalCoreState("deadlocked")); // false true
 * ```
 */
export function isFinalCoreState(state: CoreStateName): boolean {
  return FINAL_STATES.has(state);
}
