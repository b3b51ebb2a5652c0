/**
 * An exhaustive explorer (a small explicit-state model checker) for SPMD programs: it visits
 * every interleaving of the cores' sends and receives, under a chosen channel capacity, and
 * proves that no reachable state is stuck (some core unfinished, no step enabled) or returns a
 * shortest schedule that reaches one. It ignores time, links and memory.
 *
 * Why the state key is sound. A receive names its source and tag, so each core is a Kahn
 * process: what it does next depends only on the messages it has received, and each (from, to,
 * tag) channel carries the same sequence of messages in every interleaving. A core's sequence of
 * operations is therefore the same in every schedule (programs must be deterministic: no
 * randomness, no state shared between cores), and a state is fully described by how many
 * operations each core has completed; the channels' queue lengths (sends on a channel so far
 * minus receives on it) follow from those counts, so the counts alone are the visited-set key.
 * For the same reason each core's generator runs only once: its trace of operations, extended
 * lazily, is shared by every state. Compute, alloc, free and flush touch no channel and commute
 * with every other step, so they run eagerly after the step before them; only sends and
 * receives interleave. (Determinacy also means every maximal schedule ends in the same state,
 * so there is at most one stuck state; the explorer still visits them all, which checks it and
 * gives a shortest schedule to the stuck one.)
 *
 * @module
 */

import { OptionsError, ProgramError, RunLimitError } from "../errors.ts";
import { Topology } from "../topology/topology.ts";
import type { Tag } from "./core_machine.ts";
import {
  intact,
  isHandleOperation,
  type Message,
  type Operation,
  type OperationKind,
  type Program,
  type ProgramGenerator,
  ProgramHandle,
  ProgramStack,
  Refused,
  snapshotPayload,
} from "./program.ts";

/**
 * Options of {@linkcode exploreProgram}.
 *
 * @example
 * ```ts
 * import { exploreProgram, ringTopology } from "@podsim/podsim";
 * const result = exploreProgram(ringTopology(3), function* () {}, { channelCapacity: 0 });
 * console.log(result.states); // 1
 * ```
 */
export interface ExploreOptions {
  /**
   * Messages a (from, to, tag) channel may hold before a send blocks. Infinity (default) is the
   * runtime's semantics (a send is a DMA into the receiver's buffer); 0 means rendezvous (a send
   * completes only together with the matching receive).
   */
  readonly channelCapacity?: number;
  /** Stop after this many distinct states (then `complete` is false). Default 1e6. */
  readonly maxStates?: number;
}

/**
 * One step of a schedule: a core completes an operation. Operations that touch no channel
 * (compute, alloc, free, flush) have peer -1 and tag "" and follow the step that led to them.
 * Under rendezvous a send and its receive complete together: the receive follows the send.
 *
 * @example
 * ```ts
 * import { type ExploreStep, exploreProgram, ringTopology } from "@podsim/podsim";
 * const { deadlock } = exploreProgram(ringTopology(2), function* (core) {
 *   yield* core.recv(1 - core.id, "x");
 * });
 * const steps: readonly ExploreStep[] = deadlock!.schedule;
 * console.log(steps.length); // 0: the initial state is stuck
 * ```
 */
export interface ExploreStep {
  /** The core that takes the step. */
  readonly core: number;
  /** The operation it completes. */
  readonly kind: OperationKind;
  /** send: the destination; recv: the source; otherwise -1. */
  readonly peer: number;
  /** send / recv: the tag; otherwise "". */
  readonly tag: Tag;
}

/**
 * A stuck state and how to reach it.
 *
 * @example
 * ```ts
 * import { exploreProgram, ringTopology } from "@podsim/podsim";
 * const { deadlock } = exploreProgram(ringTopology(2), function* (core) {
 *   yield* core.send(1 - core.id, undefined, { bytes: 4, tag: "x" });
 *   yield* core.recv(1 - core.id, "x");
 * }, { channelCapacity: 0 });
 * const waits = deadlock!.waits.map((w) => `${w.core} ${w.kind}s to ${w.peer}`);
 * console.log(waits); // [ "0 sends to 1", "1 sends to 0" ]
 * ```
 */
export interface ExploreCounterexample {
  /** The interleaving (schedule) from the initial state to the stuck state. */
  readonly schedule: readonly ExploreStep[];
  /** What each unfinished core waits for in the stuck state. */
  readonly waits: readonly { core: number; kind: "recv" | "send"; peer: number; tag: Tag }[];
}

/**
 * What {@linkcode exploreProgram} found.
 *
 * @example
 * ```ts
 * import { exploreProgram, ringTopology } from "@podsim/podsim";
 * const result = exploreProgram(ringTopology(2), function* (core) {
 *   yield* core.send(1 - core.id, undefined, { bytes: 4 });
 *   yield* core.recv(1 - core.id);
 * });
 * console.log(result); // { states: 7, terminalStates: 1, complete: true, deadlock: undefined }
 * ```
 */
export interface ExploreResult {
  /** Distinct states visited. */
  readonly states: number;
  /** States where every core finished. */
  readonly terminalStates: number;
  /** Whether the whole reachable space was explored (maxStates not hit). */
  readonly complete: boolean;
  /** The first stuck state found (breadth first, so a shortest schedule), if any. */
  readonly deadlock?: ExploreCounterexample;
}

interface Channel {
  readonly to: number;
  readonly sends: number[]; // positions in the sender's trace
  readonly recvs: number[]; // positions in the receiver's trace
  readonly messages: Message[];
}
interface Entry {
  readonly kind: "send" | "recv" | "done";
  readonly peer: number;
  readonly tag: Tag;
  readonly channel?: Channel;
  readonly ordinal: number; // index of this send / recv on its channel
  readonly before?: readonly OperationKind[]; // local ops run since the previous entry
}
interface Core {
  readonly handle: ProgramHandle;
  readonly gen: ProgramStack;
  readonly trace: Entry[];
}

const MAX_LOCAL_OPS = 1e6;

/**
 * Explores every interleaving of the sends and receives of `program` on `topology`, with each
 * (from, to, tag) channel holding at most `channelCapacity` messages, and reports the distinct
 * states, the finished ones and the first stuck one. `runProgram` models unbounded buffers;
 * this also tells whether a program deadlocks under rendezvous (capacity 0) or small buffers,
 * as an MPI-style implementation may run it. A program that throws raises a
 * {@linkcode ProgramError} naming the core; bad options raise an {@linkcode OptionsError}.
 *
 * @example
 * ```ts
 * import { type CoreHandle, exploreProgram, ringTopology } from "@podsim/podsim";
 * // Everyone sends, then receives: fine with buffers, stuck under rendezvous.
 * const ring = ringTopology(4);
 * const exchange = function* (core: CoreHandle) {
 *   const n = core.coreCount;
 *   yield* core.send((core.id + 1) % n, undefined, { bytes: 4, tag: "x" });
 *   yield* core.recv((core.id + n - 1) % n, "x");
 * };
 * console.log(exploreProgram(ring, exchange).deadlock); // undefined
 * const { deadlock } = exploreProgram(ring, exchange, { channelCapacity: 0 });
 * console.log(deadlock!.waits.every((w) => w.kind === "send")); // true
 * ```
 */
export function exploreProgram(
  topology: Topology,
  program: Program,
  options: ExploreOptions = {},
): ExploreResult {
  if (!(topology instanceof Topology)) throw new OptionsError("exploreProgram needs a Topology");
  const capacity = options.channelCapacity ?? Infinity;
  if (!(capacity === Infinity || (Number.isInteger(capacity) && capacity >= 0))) {
    throw new OptionsError(`channelCapacity must be an integer >= 0 or Infinity, got ${capacity}`);
  }
  const maxStates = options.maxStates ?? 1e6;
  if (!(maxStates > 0)) throw new OptionsError(`maxStates must be positive, got ${maxStates}`);
  const n = topology.coreCount;
  const channels = new Map<string, Channel>();
  const channel = (from: number, to: number, tag: Tag): Channel => {
    const key = `${from},${to},${typeof tag},${tag}`;
    let c = channels.get(key);
    if (!c) channels.set(key, c = { to, sends: [], recvs: [], messages: [] });
    return c;
  };
  const fail = (id: number, cause: unknown): never => {
    const message = cause instanceof Error ? cause.message : String(cause);
    if (cause instanceof ProgramError && message.startsWith(`core ${id} `)) throw cause;
    const what = cause instanceof ProgramError ? "" : "program threw: ";
    throw new ProgramError(`core ${id}: ${what}${message}`, { cause });
  };
  // Runs core `id` from `answer` to its next send, receive or end; appends that to its trace.
  const extend = (id: number, answer: unknown): void => {
    const { gen, trace } = cores[id];
    const before: OperationKind[] = [];
    for (let value = answer;;) {
      let next: IteratorResult<unknown, unknown>;
      try {
        next = gen.next(value);
      } catch (e) {
        return fail(id, e);
      }
      const at = before.length ? { before } : {};
      if (next.done) return void trace.push({ kind: "done", peer: -1, tag: "", ordinal: 0, ...at });
      const op = next.value as Operation;
      // The stack runs calls and takes (claims) every operation it hands over as this core's.
      const changed = isHandleOperation(op) ? intact(op, id, n) : undefined;
      if (changed !== undefined) {
        throw new ProgramError(
          `core ${id}: a ${String(op.kind)} operation was changed after its checks (${changed})`,
        );
      }
      if (op instanceof Refused || !isHandleOperation(op)) {
        throw new ProgramError(
          `core ${id}: yielded something that is not an operation of its handle`,
        );
      }
      if (op.kind === "send" || op.kind === "recv") {
        const send = op.kind === "send";
        const c = send ? channel(id, op.peer, op.tag) : channel(op.peer, id, op.tag);
        const positions = send ? c.sends : c.recvs;
        const entry = { kind: op.kind, peer: op.peer, tag: op.tag, channel: c, ...at };
        trace.push({ ...entry, ordinal: positions.push(trace.length) - 1 });
        if (send) {
          const { peer: to, tag, bytes } = op;
          const payload = snapshotPayload(op.payload);
          c.messages.push({ from: id, to, tag, payload, bytes, sentAt: 0, arrivedAt: 0 });
        }
        return;
      }
      if (before.push(op.kind) > MAX_LOCAL_OPS) {
        throw new RunLimitError(`core ${id} ran ${MAX_LOCAL_OPS} local operations in a row`);
      }
      value = op.kind === "compute" ? 0 : undefined;
    }
  };
  const cores: Core[] = [];
  const shared = new Map<unknown, unknown>(); // one run: library bookkeeping is shared
  for (let id = 0; id < n; id++) {
    const handle = new ProgramHandle(id, topology, () => 0, shared);
    let gen: ProgramGenerator | undefined;
    try {
      gen = program(handle);
    } catch (e) {
      fail(id, e);
    }
    if (typeof gen?.next !== "function" || Symbol.asyncIterator in gen) {
      throw new ProgramError(`core ${id}: the program must be a generator function (function*)`);
    }
    cores.push({ handle, gen: new ProgramStack(gen!, handle), trace: [] });
  }
  for (let id = 0; id < n; id++) extend(id, undefined);

  // Breadth first. A state is its per-core counts of completed sends and receives; state k was
  // reached from parents[k] by a step of movers[k] (with partners[k] in a rendezvous, else -1).
  const start = new Int32Array(n);
  const visited = new Set<string>([start.join()]);
  const queue: (Int32Array | undefined)[] = [start];
  const parents = [-1], movers = [-1], partners = [-1];
  let terminalStates = 0, stuck = -1, complete = true;
  const step = (state: Int32Array, from: number, core: number, partner: number): boolean => {
    const next = state.slice();
    for (const id of partner < 0 ? [core] : [core, partner]) {
      const { trace } = cores[id];
      const done = trace[next[id]++];
      if (trace.length === next[id]) {
        extend(id, done.kind === "recv" ? done.channel!.messages[done.ordinal] : undefined);
      }
    }
    const key = next.join();
    if (visited.has(key)) return true;
    if (visited.size >= maxStates) return complete = false;
    visited.add(key);
    queue.push(next);
    parents.push(from), movers.push(core), partners.push(partner);
    return true;
  };
  explore: for (let head = 0; head < queue.length; head++) {
    const state = queue[head]!;
    queue[head] = undefined;
    let unfinished = false, enabled = false;
    for (let id = 0; id < n; id++) {
      const e = cores[id].trace[state[id]];
      if (e.kind === "done") continue;
      unfinished = true;
      const c = e.channel!;
      let partner = -1;
      if (e.kind === "recv") {
        // Enabled when the sender has completed the matching send (never with rendezvous).
        if (capacity === 0 || !(c.sends[e.ordinal] < state[e.peer])) continue;
      } else if (capacity === 0) {
        const r = cores[c.to].trace[state[c.to]];
        if (r.channel !== c) continue; // the receiver is not at the matching receive
        partner = c.to;
      } else if (e.ordinal >= capacity && !(c.recvs[e.ordinal - capacity] < state[c.to])) {
        continue; // the channel holds `capacity` messages
      }
      enabled = true;
      if (!step(state, head, id, partner)) break explore;
    }
    if (!unfinished) terminalStates++;
    else if (!enabled && stuck < 0) stuck = head;
  }
  return {
    states: visited.size,
    terminalStates,
    complete,
    deadlock: stuck < 0 ? undefined : counterexample(cores, stuck, parents, movers, partners),
  };
}

/** Replays the moves that led to state `stuck` as a schedule, and lists what its cores wait on. */
function counterexample(
  cores: readonly Core[],
  stuck: number,
  parents: readonly number[],
  movers: readonly number[],
  partners: readonly number[],
): ExploreCounterexample {
  const moves: number[] = [];
  for (let k = stuck; k > 0; k = parents[k]) moves.push(k);
  const counts = cores.map(() => 0);
  const schedule: ExploreStep[] = [];
  const locals = (core: number) => {
    for (const kind of cores[core].trace[counts[core]].before ?? []) {
      schedule.push({ core, kind, peer: -1, tag: "" });
    }
  };
  cores.forEach((_, id) => locals(id));
  for (const k of moves.reverse()) {
    for (const core of partners[k] < 0 ? [movers[k]] : [movers[k], partners[k]]) {
      const { kind, peer, tag } = cores[core].trace[counts[core]++];
      schedule.push({ core, kind: kind as OperationKind, peer, tag });
    }
    for (const core of partners[k] < 0 ? [movers[k]] : [movers[k], partners[k]]) locals(core);
  }
  const waits = cores.flatMap(({ trace }, core) => {
    const { kind, peer, tag } = trace[counts[core]];
    return kind === "done" ? [] : [{ core, kind, peer, tag }];
  });
  return { schedule, waits };
}
