/**
 * Compiles a flat xstate machine into a table-driven `ActorLogic`.
 *
 * Why: xstate's statechart interpreter costs ~5 us per event on the build machines (measured
 * in bench/runtime_bench.ts), which caps a 2048-core simulation far below its target of
 * 500k message deliveries per second. A flat, guard-free machine is fully described by its
 * (state, event type) -> target table plus one pure context reducer, so the actor runs that
 * table instead: still an xstate actor (createActor, snapshots, subscriptions, inspection),
 * ~40-50x cheaper per event. The machine stays the specification: tests enumerate it with
 * `xstate/graph` and check that the compiled logic agrees with it on every state and event.
 *
 * @module
 */

import type { ActorLogic, AnyStateMachine, EventObject, Snapshot } from "../_xstate.ts";

/** A snapshot of compiled logic: the machine's state value, context and status. */
export type CompiledSnapshot<TState extends string, TContext> = Snapshot<undefined> & {
  /** The current state's name. */
  readonly value: TState;
  /** The current context. */
  readonly context: TContext;
};

/** The transition table read from a machine: state -> event type -> target state. */
export type TransitionTable = ReadonlyMap<string, ReadonlyMap<string, string>>;

/**
 * Reads the transition table of a flat machine. Throws if the machine is not flat, has a
 * guarded transition, or has several candidate transitions for one event: those need the
 * interpreter, and compiling them would silently change behaviour.
 */
export function readTransitionTable(machine: AnyStateMachine): {
  table: TransitionTable;
  finals: ReadonlySet<string>;
  initial: string;
} {
  const table = new Map<string, Map<string, string>>();
  const finals = new Set<string>();
  for (const [key, node] of Object.entries(machine.root.states)) {
    if (Object.keys(node.states).length > 0) throw new Error(`state "${key}" is not atomic`);
    if (node.type === "final") finals.add(key);
    const row = new Map<string, string>();
    for (const [eventType, candidates] of node.transitions) {
      if (candidates.length !== 1 || candidates[0].guard) {
        throw new Error(`state "${key}" event "${eventType}" needs guards; cannot compile`);
      }
      row.set(eventType, candidates[0].target?.[0]?.key ?? key);
    }
    table.set(key, row);
  }
  const initial = machine.root.initial.target[0].key;
  return { table, finals, initial };
}

/**
 * Table-driven logic equivalent to `machine` when every transition of the machine runs the
 * same context update, `reduce`. An event with no transition from the current state is ignored
 * (as xstate does); a final state sets the snapshot's status to "done".
 */
export function compileFlatMachine<
  TState extends string,
  TContext,
  TEvent extends EventObject,
  TInput,
>(
  machine: AnyStateMachine,
  reduce: (context: TContext, event: TEvent) => TContext,
  initialContext: (input: TInput) => TContext,
): ActorLogic<CompiledSnapshot<TState, TContext>, TEvent, TInput> {
  const { table, finals, initial } = readTransitionTable(machine);
  return {
    config: machine,
    transition(snapshot, event) {
      const target = table.get(snapshot.value)?.get(event.type);
      if (target === undefined || snapshot.status !== "active") return snapshot;
      return {
        status: finals.has(target) ? "done" : "active",
        output: undefined,
        error: undefined,
        value: target as TState,
        context: reduce(snapshot.context, event),
      };
    },
    getInitialSnapshot(_scope, input) {
      return {
        status: "active",
        output: undefined,
        error: undefined,
        value: initial as TState,
        context: initialContext(input),
      };
    },
    getPersistedSnapshot: (snapshot) => snapshot,
    restoreSnapshot: (snapshot) => snapshot as unknown as CompiledSnapshot<TState, TContext>,
  };
}
