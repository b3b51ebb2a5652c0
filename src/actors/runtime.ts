/**
 * The discrete-event runtime: runs one SPMD program on every core of a topology. One event
 * queue, ordered by simulated time with an insertion-order tie-break, drives everything; a
 * core's program runs inline until it blocks (compute, a blocked receive, a flush), so no actor
 * ever sends to another synchronously and 2048 cores never nest calls.
 *
 * Link model: a message reserves each link of its dimension-ordered route in turn (cut-through:
 * the head moves on after the hop latency; the tail cannot leave a link before it arrived from
 * the previous one). Messages sharing a link direction queue behind each other in the order they
 * were sent, so contention shows up as later arrivals. An uncontended neighbour message arrives
 * after latency + bytes / bandwidth.
 *
 * @module
 */

import { type AnyActorRef, createActor, fromTransition } from "../_xstate.ts";
import { ProgramError, RunLimitError } from "../errors.ts";
import type { Topology } from "../topology/topology.ts";
import { type CoreActor, type CoreStateName, createCoreActor, type Tag } from "./core_machine.ts";
import { DeadlockError, type WaitEdge } from "./deadlock.ts";
import { EventQueue } from "./event_queue.ts";
import { type BytesByCategory, fits, OutOfMemoryError } from "./memory_ledger.ts";
import {
  type Message,
  Operation,
  type Program,
  type ProgramGenerator,
  ProgramHandle,
} from "./program.ts";
import { type TraceEvent, TraceRecorder } from "./trace.ts";

/** Safety limits: a run that passes one ends with {@linkcode RunLimitError} instead of hanging. */
export interface RunLimits {
  /** Largest simulated time an event may have, seconds. Default 86,400 (one simulated day). */
  readonly maxSimulatedSeconds?: number;
  /** Most operations all programs together may issue. Default 2e9. */
  readonly maxOps?: number;
}

/** Options of {@linkcode runProgram}. */
export interface RunOptions {
  /** Record a Chrome trace (returned as `result.trace`). Default false. */
  readonly trace?: boolean;
  /** HBM budget per core in bytes; defaults to the hardware's (16 GiB on TPU v3). */
  readonly memoryBudget?: number;
  /** Safety limits. */
  readonly limits?: RunLimits;
  /**
   * xstate inspection: receives every event and snapshot of the pod and core actors (slows
   * the run; for debugging and visualisers).
   */
  readonly inspect?: (event: ActorInspectionEvent) => void;
}

/** What xstate's inspection API reports (the fields podsim relies on; xstate sends more). */
export interface ActorInspectionEvent {
  /** "@xstate.actor", "@xstate.event", "@xstate.snapshot" or "@xstate.action". */
  readonly type: string;
  /** The actor concerned (a core actor's id is "core-N"). */
  readonly actorRef?: unknown;
  /** The event, for "@xstate.event" and "@xstate.snapshot". */
  readonly event?: unknown;
  /** The new snapshot, for "@xstate.snapshot". */
  readonly snapshot?: unknown;
}

/**
 * The pod: the root actor whose xstate system the core actors share (one inspection stream, no
 * per-core system). It holds no state of its own.
 */
const podLogic = fromTransition((state: null) => state, null);

/** How a run ended. */
export type RunStatus = "completed" | "deadlocked" | "out_of_memory";

/** What one core did. */
export interface CoreReport {
  /** Device id. */
  readonly id: number;
  /** Final state of the core actor. */
  readonly state: CoreStateName;
  /** Simulated clock at the end, seconds. */
  readonly clock: number;
  /** Why the core failed, for failure states. */
  readonly reason?: string;
  /** Bytes held at the end, by category. */
  readonly liveBytes: BytesByCategory;
  /** Peak bytes by category. */
  readonly peakBytes: BytesByCategory;
  /** Peak bytes held at once, all categories. */
  readonly peakTotalBytes: number;
  /** The HBM budget. */
  readonly budgetBytes: number;
  /** Operations the program issued. */
  readonly ops: number;
  /** Events the core actor received (state changes and ledger updates). */
  readonly actorEvents: number;
  /** Messages sent. */
  readonly messagesSent: number;
  /** Bytes sent. */
  readonly bytesSent: number;
  /** Messages delivered to this core. */
  readonly messagesReceived: number;
  /** Bytes delivered to this core. */
  readonly bytesReceived: number;
  /** FLOPs computed. */
  readonly flops: number;
  /** Simulated seconds spent computing. */
  readonly computeSeconds: number;
  /** Simulated seconds blocked on receives. */
  readonly waitSeconds: number;
  /** Simulated seconds blocked on flushes (state `sending`). */
  readonly sendSeconds: number;
}

/** The outcome of a run. */
export interface RunResult {
  /** How the run ended. */
  readonly status: RunStatus;
  /** The deadlock or out-of-memory that ended the run, if any. */
  readonly error?: DeadlockError | OutOfMemoryError;
  /** Simulated time of the run: the last core's final clock, seconds. */
  readonly simulatedSeconds: number;
  /** Per-core reports, by id. */
  readonly cores: readonly CoreReport[];
  /** Totals over all cores. */
  readonly totals: {
    readonly ops: number;
    readonly events: number;
    readonly messages: number;
    readonly bytes: number;
    readonly flops: number;
  };
  /** Chrome trace events, when requested. */
  readonly trace?: readonly TraceEvent[];
}

/** A message in flight or in a mailbox. */
class Envelope implements Message {
  constructor(
    readonly from: number,
    readonly to: number,
    readonly tag: Tag,
    readonly key: number,
    readonly payload: unknown,
    readonly bytes: number,
    readonly sentAt: number,
    readonly arrivedAt: number,
  ) {}
}

// Per-core numbers live in one Float64Array, a row of STRIDE per core, not in object fields:
// V8 boxes double-valued fields as separate heap numbers, and with 2048 cores the cache misses
// of chasing them were a large share of a message delivery (bench/runtime_bench.ts).
const BLOCKED_SINCE = 0;
const SENDS_DONE_AT = 1;
const WAIT_KEY = 2;
const OPS = 3;
const ACTOR_EVENTS = 4;
const MESSAGES_SENT = 5;
const BYTES_SENT = 6;
const MESSAGES_RECEIVED = 7;
const BYTES_RECEIVED = 8;
const FLOPS = 9;
const COMPUTE_SECONDS = 10;
const WAIT_SECONDS = 11;
const SEND_SECONDS = 12;
const STRIDE = 13;

/** The runtime's view of one core: its actor, program and mailbox. */
class CoreSlot {
  readonly actor: CoreActor;
  /** Row of this core in the runtime's number table. */
  readonly row: number;
  gen!: ProgramGenerator;
  /** Messages that arrived before their receive; created on first use. */
  mailbox: Map<number, Envelope[]> | undefined = undefined;
  waiting = false;
  waitFrom = -1;
  waitTag: Tag = "";
  blockedOn: "compute" | "send" = "compute";
  blockLabel = "";
  resumeValue: unknown = undefined;

  constructor(readonly id: number, budget: number, pod: AnyActorRef) {
    this.actor = createCoreActor(id, budget, pod);
    this.row = id * STRIDE;
  }

  get state(): CoreStateName {
    return this.actor.getSnapshot().value;
  }
}

/** Thrown inside the loop to end a run on an out-of-memory; caught by {@linkcode runProgram}. */
class RunStopped {
  constructor(readonly error: OutOfMemoryError) {}
}

class Runtime {
  readonly #topology: Topology;
  readonly #slots: CoreSlot[] = [];
  readonly #queue = new EventQueue<CoreSlot | Envelope>();
  readonly #linkFreeAt: Float64Array;
  readonly #route: Int32Array;
  readonly #num: Float64Array;
  readonly #trace: TraceRecorder | undefined;
  readonly #pod: AnyActorRef;
  readonly #maxSeconds: number;
  readonly #maxOps: number;
  readonly #flopsRate: { bf16: number; f32: number };
  readonly #hbmRate: number;
  // Tags are interned to small integers so a (source, tag) channel is one number:
  // tagIndex * coreCount + source. Number keys hash and compare far faster than strings.
  readonly #tagIndex = new Map<Tag, number>();
  #now = 0;
  #ops = 0;
  #flows = 0;

  constructor(topology: Topology, program: Program, options: RunOptions) {
    const hw = topology.hardware;
    const budget = options.memoryBudget ?? hw.hbmBytesPerCore;
    if (!(Number.isFinite(budget) && budget > 0)) {
      throw new ProgramError(`memoryBudget must be a positive number of bytes, got ${budget}`);
    }
    this.#maxSeconds = positiveLimit(
      "maxSimulatedSeconds",
      options.limits?.maxSimulatedSeconds,
      86_400,
    );
    this.#maxOps = positiveLimit("maxOps", options.limits?.maxOps, 2e9);
    if (typeof program !== "function") {
      throw new ProgramError(`program must be a generator function, got ${typeof program}`);
    }
    this.#topology = topology;
    this.#linkFreeAt = new Float64Array(topology.linkCount);
    this.#route = new Int32Array(topology.chipsX + topology.chipsY + 1);
    this.#num = new Float64Array(topology.coreCount * STRIDE);
    this.#trace = options.trace ? new TraceRecorder(topology) : undefined;
    const peak = hw.peakFlopsPerCore * hw.computeEfficiency;
    this.#flopsRate = { bf16: peak, f32: peak * hw.f32FlopsFraction };
    this.#hbmRate = hw.hbmBandwidthPerCore * hw.hbmEfficiency;
    this.#pod = createActor(podLogic, { inspect: options.inspect }).start();
    const clock = () => this.#now;
    for (let id = 0; id < topology.coreCount; id++) {
      const slot = new CoreSlot(id, budget, this.#pod);
      const gen = program(new ProgramHandle(id, topology, clock));
      if (!gen || typeof (gen as ProgramGenerator).next !== "function") {
        throw new ProgramError(
          "program must be a generator function (function*) returning a generator",
        );
      }
      slot.gen = gen;
      this.#slots.push(slot);
    }
  }

  run(): RunResult {
    let error: DeadlockError | OutOfMemoryError | undefined;
    try {
      for (const slot of this.#slots) this.#step(slot, undefined);
      this.#loop();
      error = this.#detectDeadlock();
    } catch (e) {
      if (!(e instanceof RunStopped)) throw e;
      error = e.error;
    }
    const status: RunStatus = error instanceof OutOfMemoryError
      ? "out_of_memory"
      : error
      ? "deadlocked"
      : "completed";
    return this.#result(status, error);
  }

  #loop(): void {
    const queue = this.#queue;
    while (queue.size > 0) {
      const time = queue.peekTime();
      if (time > this.#maxSeconds) {
        throw new RunLimitError(
          `simulated time passed the limit of ${this.#maxSeconds}s (next event at t=${time}s); ` +
            `raise limits.maxSimulatedSeconds if the program is meant to run that long`,
        );
      }
      this.#now = time;
      const item = queue.pop()!;
      if (item instanceof Envelope) this.#deliver(item);
      else this.#resume(item);
    }
  }

  /** A compute or flush finished: back to idle, and run the program on. */
  #resume(slot: CoreSlot): void {
    const now = this.#now;
    if (slot.blockedOn === "send") {
      this.#num[slot.row + SEND_SECONDS] += now - this.#num[slot.row + BLOCKED_SINCE];
    }
    this.#trace?.slice(
      slot.id,
      slot.blockedOn,
      slot.blockLabel,
      this.#num[slot.row + BLOCKED_SINCE],
      now,
    );
    this.#send(slot, { type: "RESUME", at: now });
    this.#step(slot, slot.resumeValue);
  }

  /** A message's last byte arrived: wake its receiver if it waits for it, else mailbox it. */
  #deliver(msg: Envelope): void {
    const slot = this.#slots[msg.to];
    this.#num[slot.row + MESSAGES_RECEIVED]++;
    this.#num[slot.row + BYTES_RECEIVED] += msg.bytes;
    if (slot.waiting && this.#num[slot.row + WAIT_KEY] === msg.key) {
      const now = this.#now;
      slot.waiting = false;
      this.#num[slot.row + WAIT_SECONDS] += now - this.#num[slot.row + BLOCKED_SINCE];
      this.#trace?.slice(
        slot.id,
        "wait",
        `recv from ${msg.from}`,
        this.#num[slot.row + BLOCKED_SINCE],
        now,
        {
          tag: msg.tag,
        },
      );
      this.#send(slot, { type: "RESUME", at: now });
      this.#step(slot, msg);
      return;
    }
    const mailbox = slot.mailbox ??= new Map();
    const queue = mailbox.get(msg.key);
    if (queue) queue.push(msg);
    else mailbox.set(msg.key, [msg]);
  }

  #send(slot: CoreSlot, event: Parameters<CoreActor["send"]>[0]): void {
    this.#num[slot.row + ACTOR_EVENTS]++;
    slot.actor.send(event);
  }

  /** Runs a core's program from `input` until it blocks or ends. */
  #step(slot: CoreSlot, input: unknown): void {
    const now = this.#now;
    let value = input;
    for (;;) {
      let next: IteratorResult<Operation, void>;
      try {
        next = slot.gen.next(value);
      } catch (e) {
        this.#fail(slot, e);
      }
      if (next.done) {
        this.#send(slot, { type: "FINISH", at: now });
        return;
      }
      this.#num[slot.row + OPS]++;
      if (++this.#ops > this.#maxOps) {
        throw new RunLimitError(
          `programs issued more than ${this.#maxOps} operations (core ${slot.id} at t=${now}s); ` +
            `raise limits.maxOps if that is intended`,
        );
      }
      const op = next.value;
      if (!(op instanceof Operation)) {
        this.#fail(
          slot,
          new ProgramError(
            `core ${slot.id} yielded ${JSON.stringify(op) ?? String(op)}, not an operation: ` +
              "use yield* with the core handle's methods (yield* core.compute(...))",
          ),
        );
      }
      switch (op.kind) {
        case "send":
          this.#post(slot, op.peer, op.tag, op.payload, op.bytes);
          value = undefined;
          continue;
        case "recv": {
          const key = this.#channel(op.peer, op.tag);
          const queue = slot.mailbox?.get(key);
          if (queue !== undefined) {
            value = queue.shift();
            if (queue.length === 0) slot.mailbox!.delete(key);
            continue;
          }
          slot.waiting = true;
          this.#num[slot.row + WAIT_KEY] = key;
          slot.waitFrom = op.peer;
          slot.waitTag = op.tag;
          this.#num[slot.row + BLOCKED_SINCE] = now;
          this.#send(slot, { type: "RECV_WAIT", at: now, from: op.peer, tag: op.tag });
          return;
        }
        case "compute": {
          // An op's own efficiency (0 = not given) replaces the hardware's default.
          const flopsRate = op.efficiency === 0
            ? this.#flopsRate[op.dtype]
            : this.#flopsRate[op.dtype] / this.#topology.hardware.computeEfficiency * op.efficiency;
          const seconds = Math.max(op.flops / flopsRate, op.bytes / this.#hbmRate);
          this.#num[slot.row + FLOPS] += op.flops;
          if (seconds === 0) {
            value = 0;
            continue;
          }
          this.#num[slot.row + COMPUTE_SECONDS] += seconds;
          this.#block(slot, "compute", op.label, now + seconds, seconds);
          this.#send(slot, { type: "COMPUTE", at: now, label: op.label });
          return;
        }
        case "flush":
          value = undefined;
          if (this.#num[slot.row + SENDS_DONE_AT] <= now) continue;
          this.#block(slot, "send", "flush", this.#num[slot.row + SENDS_DONE_AT], undefined);
          this.#send(slot, { type: "SEND_WAIT", at: now, label: "flush" });
          return;
        case "alloc": {
          const ledger = slot.actor.getSnapshot().context.ledger;
          if (!fits(ledger, op.bytes)) {
            const request = { bytes: op.bytes, category: op.category, label: op.label };
            const error = new OutOfMemoryError(slot.id, now, request, ledger);
            this.#send(slot, { type: "OUT_OF_MEMORY", at: now, reason: error.message });
            throw new RunStopped(error);
          }
          this.#send(slot, { type: "ALLOC", at: now, bytes: op.bytes, category: op.category });
          this.#trace?.memory(slot.id, now, slot.actor.getSnapshot().context.ledger);
          value = undefined;
          continue;
        }
        case "free": {
          const held = slot.actor.getSnapshot().context.ledger.live[op.category];
          if (op.bytes > held) {
            this.#fail(
              slot,
              new ProgramError(
                `core ${slot.id} at t=${now}s: free "${op.label}" of ${op.bytes} bytes of ` +
                  `${op.category}, but only ${held} are allocated`,
              ),
            );
          }
          this.#send(slot, { type: "FREE", at: now, bytes: op.bytes, category: op.category });
          this.#trace?.memory(slot.id, now, slot.actor.getSnapshot().context.ledger);
          value = undefined;
          continue;
        }
      }
    }
  }

  #channel(from: number, tag: Tag): number {
    let index = this.#tagIndex.get(tag);
    if (index === undefined) this.#tagIndex.set(tag, index = this.#tagIndex.size);
    return index * this.#topology.coreCount + from;
  }

  #block(
    slot: CoreSlot,
    on: "compute" | "send",
    label: string,
    until: number,
    value: unknown,
  ): void {
    slot.blockedOn = on;
    slot.blockLabel = label;
    this.#num[slot.row + BLOCKED_SINCE] = this.#now;
    slot.resumeValue = value;
    this.#queue.push(until, slot);
  }

  /** Reserves the route's links and schedules the arrival. */
  #post(slot: CoreSlot, to: number, tag: Tag, payload: unknown, bytes: number): void {
    const now = this.#now;
    const route = this.#route;
    const hops = this.#topology.routeInto(slot.id, to, route);
    const bandwidth = this.#topology.linkBandwidth;
    const latency = this.#topology.linkLatency;
    const freeAt = this.#linkFreeAt;
    let head = now; // earliest time the head can enter the next link
    let tail = now; // time the tail arrived at the current link's entry
    let start = now;
    let duration = 0;
    let injectStart = now;
    let injectEnd = now;
    for (let i = 0; i < hops; i++) {
      const link = route[i];
      duration = bytes / bandwidth[link];
      // Start when the head is here and the link is free, and not so early that this link
      // would finish before the tail has arrived from the previous one.
      start = Math.max(head, freeAt[link], tail - duration);
      freeAt[link] = start + duration;
      if (i === 0) {
        injectStart = start;
        injectEnd = start + duration;
      }
      head = start + latency[link];
      tail = head + duration;
    }
    const arrival = tail;
    if (injectEnd > this.#num[slot.row + SENDS_DONE_AT]) {
      this.#num[slot.row + SENDS_DONE_AT] = injectEnd;
    }
    this.#num[slot.row + MESSAGES_SENT]++;
    this.#num[slot.row + BYTES_SENT] += bytes;
    const msg = new Envelope(
      slot.id,
      to,
      tag,
      this.#channel(slot.id, tag),
      payload,
      bytes,
      now,
      arrival,
    );
    this.#queue.push(arrival, msg);
    if (this.#trace) {
      this.#trace.transfer(
        this.#flows++,
        msg,
        route[0],
        route[hops - 1],
        injectStart,
        injectEnd,
        arrival - duration,
        arrival,
      );
    }
  }

  /** The program threw (or asked for something impossible): the core fails, the run stops. */
  #fail(slot: CoreSlot, cause: unknown): never {
    const error = cause instanceof ProgramError ? cause : new ProgramError(
      `core ${slot.id} program threw at t=${this.#now}s: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      { cause },
    );
    this.#send(slot, { type: "FAIL", at: this.#now, reason: error.message });
    throw error;
  }

  /** With no event left, any core still waiting can never wake: report the wait-for graph. */
  #detectDeadlock(): DeadlockError | undefined {
    const waits: WaitEdge[] = [];
    for (const slot of this.#slots) {
      if (!slot.waiting) continue;
      const unreceived = [...(slot.mailbox?.values() ?? [])].map((q) => ({
        from: q[0].from,
        tag: q[0].tag,
        count: q.length,
      }));
      waits.push({
        core: slot.id,
        from: slot.waitFrom,
        tag: slot.waitTag,
        fromState: this.#slots[slot.waitFrom].state,
        unreceived,
      });
    }
    if (waits.length === 0) return undefined;
    const error = new DeadlockError(this.#now, waits);
    for (const w of waits) {
      const slot = this.#slots[w.core];
      this.#num[slot.row + WAIT_SECONDS] += this.#now - this.#num[slot.row + BLOCKED_SINCE];
      this.#send(slot, {
        type: "DEADLOCK",
        at: this.#now,
        reason: `waits for core ${w.from} tag ${JSON.stringify(w.tag)} forever`,
      });
    }
    return error;
  }

  #result(status: RunStatus, error: DeadlockError | OutOfMemoryError | undefined): RunResult {
    let simulatedSeconds = 0;
    const totals = { ops: 0, events: 0, messages: 0, bytes: 0, flops: 0 };
    const num = this.#num;
    const cores = this.#slots.map((slot): CoreReport => {
      const { value, context } = slot.actor.getSnapshot();
      simulatedSeconds = Math.max(simulatedSeconds, context.clock);
      totals.ops += num[slot.row + OPS];
      totals.events += num[slot.row + ACTOR_EVENTS];
      totals.messages += num[slot.row + MESSAGES_SENT];
      totals.bytes += num[slot.row + BYTES_SENT];
      totals.flops += num[slot.row + FLOPS];
      return {
        id: slot.id,
        state: value,
        clock: context.clock,
        ...(context.reason === undefined ? {} : { reason: context.reason }),
        liveBytes: context.ledger.live,
        peakBytes: context.ledger.peak,
        peakTotalBytes: context.ledger.peakTotal,
        budgetBytes: context.ledger.budget,
        ops: num[slot.row + OPS],
        actorEvents: num[slot.row + ACTOR_EVENTS],
        messagesSent: num[slot.row + MESSAGES_SENT],
        bytesSent: num[slot.row + BYTES_SENT],
        messagesReceived: num[slot.row + MESSAGES_RECEIVED],
        bytesReceived: num[slot.row + BYTES_RECEIVED],
        flops: num[slot.row + FLOPS],
        computeSeconds: num[slot.row + COMPUTE_SECONDS],
        waitSeconds: num[slot.row + WAIT_SECONDS],
        sendSeconds: num[slot.row + SEND_SECONDS],
      };
    });
    this.#pod.stop();
    return {
      status,
      ...(error ? { error } : {}),
      simulatedSeconds,
      cores,
      totals,
      ...(this.#trace ? { trace: this.#trace.events } : {}),
    };
  }
}

function positiveLimit(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!(v > 0)) throw new ProgramError(`limits.${name} must be a positive number, got ${value}`);
  return v;
}

/**
 * Runs an SPMD program on every core of a topology and returns what happened. A deadlock or
 * an out-of-memory is a result (`status`, `error`, each core's `state`), not an exception; bad
 * input and a program that throws raise {@linkcode ProgramError}; passing a limit raises
 * {@linkcode RunLimitError}.
 *
 * @example
 * ```ts
 * import { runProgram, sliceTopology } from "@podsim/podsim";
 * const result = runProgram(sliceTopology("v3-8"), function* (core) {
 *   yield* core.alloc(2 ** 20, "activations", "x");
 *   yield* core.compute({ flops: 61.5e9, label: "matmul" }); // 1 ms at peak
 * });
 * console.log(result.status, result.simulatedSeconds); // completed 0.001
 * ```
 */
export function runProgram(
  topology: Topology,
  program: Program,
  options: RunOptions = {},
): RunResult {
  return new Runtime(topology, program, options).run();
}

/**
 * Throws the run's error unless it completed: for callers that treat a deadlock or an
 * out-of-memory as a failure.
 *
 * @example
 * ```ts
 * import { expectCompleted, runProgram, sliceTopology } from "@podsim/podsim";
 * const result = expectCompleted(runProgram(sliceTopology("v3-8"), function* () {}));
 * console.log(result.status); // "completed"
 * ```
 */
export function expectCompleted(result: RunResult): RunResult {
  if (result.error) throw result.error;
  return result;
}
