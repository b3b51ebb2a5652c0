/**
 * The discrete-event runtime: runs one SPMD program on every core of a topology. One event
 * queue, ordered by simulated time with an insertion-order tie-break, drives everything; a
 * core's program runs inline until it blocks (compute, a blocked receive, a flush), so no actor
 * ever sends to another synchronously and 2048 cores never nest calls.
 *
 * Link model: a message books each link of its dimension-ordered route in turn, cut-through:
 * its head moves on after the hop latency, and on each link it takes the earliest gap long
 * enough for its bytes (see link_calendar.ts). Every link of a route has the same bandwidth
 * (a route is all ICI or one on-chip hop), so the tail never outruns the head. An uncontended
 * message arrives after hops x latency + bytes / bandwidth; messages from one core to another
 * arrive in the order they were sent.
 *
 * @module
 */

import { type AnyActorRef, createActor, fromTransition } from "../_xstate.ts";
import { OptionsError, ProgramError, RunLimitError } from "../errors.ts";
import { Topology } from "../topology/topology.ts";
import { type CoreActor, type CoreStateName, createCoreActor, type Tag } from "./core_machine.ts";
import { DeadlockError, type WaitEdge } from "./deadlock.ts";
import { EventQueue } from "./event_queue.ts";
import { LinkCalendar } from "./link_calendar.ts";
import { type BytesByCategory, fits, OutOfMemoryError } from "./memory_ledger.ts";
import {
  intact,
  isHandleOperation,
  type Message,
  type Operation,
  type Program,
  type ProgramGenerator,
  ProgramHandle,
  ProgramStack,
  Refused,
  runEndChecks,
  snapshotPayload,
} from "./program.ts";
import { type TraceEvent, TraceRecorder } from "./trace.ts";

/**
 * Safety limits: a run that passes one ends with {@linkcode RunLimitError} instead of hanging
 * or exhausting memory.
 */
export interface RunLimits {
  /** Largest simulated time an event may have, seconds. Default 3600 (one simulated hour). */
  readonly maxSimulatedSeconds?: number;
  /** Most operations all programs together may issue. Default 5e8. */
  readonly maxOps?: number;
  /** Most operations one core may issue at one simulated instant. Default 1e6. */
  readonly maxOpsPerInstant?: number;
  /** Most messages in flight or delivered but not yet received, at once. Default 1e7. */
  readonly maxPendingMessages?: number;
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
  /** FLOPs of the computes that finished. */
  readonly flops: number;
  /** Simulated seconds spent computing. */
  readonly computeSeconds: number;
  /** Simulated seconds blocked on receives. */
  readonly waitSeconds: number;
  /** Simulated seconds blocked on flushes (state `sending`). */
  readonly sendSeconds: number;
}

/** Messages that arrived at a core but that its program never received, by channel. */
export interface UnreceivedMessages {
  /** The receiving core. */
  readonly to: number;
  /** The sending core. */
  readonly from: number;
  /** The tag they were sent with. */
  readonly tag: Tag;
  /** How many. */
  readonly count: number;
  /** Their bytes. */
  readonly bytes: number;
}

/** What every run reports, whatever its status. */
export interface RunReport {
  /** Simulated time of the run: the last event or core clock, seconds. */
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
  /** Messages delivered but never received (a program bug: nothing is dropped silently). */
  readonly unreceived: readonly UnreceivedMessages[];
  /** Chrome trace events, when requested. */
  readonly trace?: readonly TraceEvent[];
}

/** The outcome of a run: its report, and how it ended (the error says why, if it failed). */
export type RunResult =
  & RunReport
  & (
    | { readonly status: "completed"; readonly error?: undefined }
    | { readonly status: "deadlocked"; readonly error: DeadlockError }
    | { readonly status: "out_of_memory"; readonly error: OutOfMemoryError }
  );

/**
 * The pod: the root actor whose xstate system the core actors share (one inspection stream, no
 * per-core system). It holds no state of its own.
 */
const podLogic = fromTransition((state: null) => state, null);

/** A message in flight or in a mailbox. */
class Envelope implements Message {
  constructor(
    readonly from: number,
    readonly to: number,
    readonly tag: Tag,
    /** The (source, tag) channel the receiver matches on. */
    readonly channel: number,
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
const WAIT_CHANNEL = 2; // the channel a waiting core waits on; -1 when it does not wait
const PENDING_FLOPS = 3;
const OPS = 4;
const ACTOR_EVENTS = 5;
const MESSAGES_SENT = 6;
const BYTES_SENT = 7;
const MESSAGES_RECEIVED = 8;
const BYTES_RECEIVED = 9;
const FLOPS = 10;
const COMPUTE_SECONDS = 11;
const WAIT_SECONDS = 12;
const SEND_SECONDS = 13;
const INSTANT = 14; // the simulated time of the core's latest operation
const OPS_AT_INSTANT = 15; // how many operations the core issued at that time
const STRIDE = 16;

/** The runtime's view of one core: its actor, program and mailbox. */
class CoreSlot {
  readonly actor: CoreActor;
  /** Row of this core in the runtime's number table. */
  readonly row: number;
  readonly handle: ProgramHandle;
  gen!: ProgramStack;
  /** Messages that arrived before their receive, by channel; created on first use. */
  mailbox: Map<number, Envelope[]> | undefined = undefined;
  /** Latest arrival of this core's messages, by destination: keeps each pair in order. */
  lastArrival: Map<number, number> | undefined = undefined;
  blockedOn: "compute" | "send" = "compute";
  /**
   * The core resumed but its actor has not been told: the RESUME is sent only if the program
   * does something at this instant that needs an idle core (a failure); when it blocks again,
   * finishes, allocates or frees, that event goes straight from the blocked state (the idle
   * visit would last no simulated time). This halves the actor events of a typical step.
   */
  resumed = false;
  blockLabel = "";
  resumeValue: unknown = undefined;

  constructor(readonly id: number, budget: number, pod: AnyActorRef, handle: ProgramHandle) {
    this.actor = createCoreActor(id, budget, pod);
    this.row = id * STRIDE;
    this.handle = handle;
  }
}

/** Thrown inside the loop to end a run on an out-of-memory; caught by {@linkcode Runtime.run}. */
class RunStopped {
  constructor(readonly error: OutOfMemoryError) {}
}

/** A short, never-throwing description of whatever a program yielded. */
function describe(value: unknown): string {
  if (isHandleOperation(value)) return `a ${value.kind} operation`;
  if (value === undefined || value === null) return String(value);
  try {
    return typeof value === "object"
      ? `an object (${Object.keys(value).slice(0, 4).join(", ") || "no keys"})`
      : `${typeof value} ${String(value)}`;
  } catch {
    return typeof value;
  }
}

class Runtime {
  readonly #topology: Topology;
  readonly #slots: CoreSlot[] = [];
  readonly #queue = new EventQueue<CoreSlot | Envelope>();
  readonly #calendar: LinkCalendar;
  readonly #bandwidth: Float64Array;
  readonly #latency: Float64Array;
  readonly #route: Int32Array;
  readonly #num: Float64Array;
  readonly #trace: TraceRecorder | undefined;
  readonly #pod: AnyActorRef;
  readonly #limits: Required<RunLimits>;
  readonly #peakFlops: number;
  readonly #hbmRate: number;
  // Tags are interned to small integers so a (source, tag) channel is one number:
  // tagIndex * coreCount + source. Number keys hash and compare far faster than strings.
  readonly #tagIndex = new Map<Tag, number>();
  /** Library bookkeeping every core of this run shares (see runShared). */
  readonly #shared = new Map<unknown, unknown>();
  #now = 0;
  #ops = 0;
  #pending = 0;
  #flows = 0;

  constructor(topology: Topology, program: Program, options: RunOptions) {
    if (!(topology instanceof Topology)) {
      throw new OptionsError(
        `runProgram needs a Topology (from sliceTopology, meshTopology, ...), got ${
          describe(topology)
        }`,
      );
    }
    if (typeof program !== "function") {
      throw new OptionsError(`program must be a generator function, got ${describe(program)}`);
    }
    const hw = topology.hardware;
    const budget = options.memoryBudget ?? hw.hbmBytesPerCore;
    if (!(Number.isFinite(budget) && budget > 0)) {
      throw new OptionsError(`memoryBudget must be a positive number of bytes, got ${budget}`);
    }
    if (options.inspect !== undefined && typeof options.inspect !== "function") {
      throw new OptionsError(`inspect must be a function, got ${describe(options.inspect)}`);
    }
    const limits = options.limits ?? {};
    this.#limits = {
      maxSimulatedSeconds: positiveLimit("maxSimulatedSeconds", limits.maxSimulatedSeconds, 3600),
      maxOps: positiveLimit("maxOps", limits.maxOps, 5e8),
      maxOpsPerInstant: positiveLimit("maxOpsPerInstant", limits.maxOpsPerInstant, 1e6),
      maxPendingMessages: positiveLimit("maxPendingMessages", limits.maxPendingMessages, 1e7),
    };
    this.#topology = topology;
    ({ bandwidth: this.#bandwidth, latency: this.#latency } = topology.linkTables());
    this.#calendar = new LinkCalendar(topology.linkCount);
    this.#route = new Int32Array(topology.chipsX + topology.chipsY + 1);
    this.#num = new Float64Array(topology.coreCount * STRIDE);
    this.#trace = options.trace ? new TraceRecorder(topology) : undefined;
    this.#peakFlops = hw.peakFlopsPerCore;
    this.#hbmRate = hw.hbmBandwidthPerCore * hw.hbmEfficiency;
    this.#pod = createActor(podLogic, { inspect: options.inspect }).start();
    const clock = () => this.#now;
    const shared = this.#shared;
    for (let id = 0; id < topology.coreCount; id++) {
      const handle = new ProgramHandle(id, topology, clock, shared);
      const slot = new CoreSlot(id, budget, this.#pod, handle);
      this.#num[slot.row + WAIT_CHANNEL] = -1;
      this.#slots.push(slot);
      let gen: unknown;
      try {
        gen = program(slot.handle);
      } catch (e) {
        this.#fail(slot, e);
      }
      const iterator = gen as ProgramGenerator | undefined;
      if (typeof iterator?.next !== "function" || Symbol.asyncIterator in iterator) {
        this.#fail(
          slot,
          new ProgramError(
            `core ${id} at t=0s: the program returned ${describe(gen)}; it must be a synchronous ` +
              "generator function (function*)",
          ),
        );
      }
      slot.gen = new ProgramStack(gen as ProgramGenerator, slot.handle);
    }
  }

  run(): RunResult {
    try {
      for (const slot of this.#slots) this.#step(slot, undefined);
      this.#loop();
      const deadlock = this.#detectDeadlock();
      if (deadlock) return { status: "deadlocked", error: deadlock, ...this.#report() };
      for (const check of runEndChecks(this.#shared)) {
        const error = check();
        if (error) throw error;
      }
      return { status: "completed", ...this.#report() };
    } catch (e) {
      if (!(e instanceof RunStopped)) throw e;
      return { status: "out_of_memory", error: e.error, ...this.#report() };
    } finally {
      this.#pod.stop();
    }
  }

  #loop(): void {
    const queue = this.#queue;
    const maxSeconds = this.#limits.maxSimulatedSeconds;
    while (queue.size > 0) {
      const time = queue.peekTime();
      if (time > maxSeconds) {
        throw new RunLimitError(
          `simulated time passed the limit of ${maxSeconds}s (next event at t=${time}s); ` +
            `raise limits.maxSimulatedSeconds if the program is meant to run that long`,
        );
      }
      this.#now = time;
      const item = queue.pop()!;
      if (item instanceof Envelope) this.#deliver(item);
      else this.#resume(item);
    }
  }

  /** A compute or flush finished: account for it, go back to idle, run the program on. */
  #resume(slot: CoreSlot): void {
    const now = this.#now;
    const num = this.#num;
    const since = num[slot.row + BLOCKED_SINCE];
    if (slot.blockedOn === "send") num[slot.row + SEND_SECONDS] += now - since;
    else {
      num[slot.row + COMPUTE_SECONDS] += now - since;
      num[slot.row + FLOPS] += num[slot.row + PENDING_FLOPS];
    }
    this.#trace?.slice(slot.id, slot.blockedOn, slot.blockLabel, since, now);
    slot.resumed = true;
    this.#step(slot, slot.resumeValue);
  }

  /** A message's last byte arrived: wake its receiver if it waits for it, else mailbox it. */
  #deliver(msg: Envelope): void {
    const slot = this.#slots[msg.to];
    const num = this.#num;
    num[slot.row + MESSAGES_RECEIVED]++;
    num[slot.row + BYTES_RECEIVED] += msg.bytes;
    if (num[slot.row + WAIT_CHANNEL] === msg.channel) {
      const now = this.#now;
      const since = num[slot.row + BLOCKED_SINCE];
      num[slot.row + WAIT_CHANNEL] = -1;
      num[slot.row + WAIT_SECONDS] += now - since;
      this.#pending--;
      this.#trace?.slice(slot.id, "wait", `recv from ${msg.from}`, since, now, { tag: msg.tag });
      slot.resumed = true;
      this.#step(slot, msg);
      return;
    }
    const mailbox = slot.mailbox ??= new Map();
    const queue = mailbox.get(msg.channel);
    if (queue) queue.push(msg);
    else mailbox.set(msg.channel, [msg]);
  }

  #send(slot: CoreSlot, event: Parameters<CoreActor["send"]>[0]): void {
    if (slot.resumed) {
      slot.resumed = false;
      const { type } = event;
      if (
        type !== "COMPUTE" && type !== "RECV_WAIT" && type !== "SEND_WAIT" && type !== "FINISH" &&
        type !== "ALLOC" && type !== "FREE"
      ) {
        this.#num[slot.row + ACTOR_EVENTS]++;
        slot.actor.send({ type: "RESUME", at: this.#now });
      }
    }
    this.#num[slot.row + ACTOR_EVENTS]++;
    slot.actor.send(event);
  }

  /** Runs a core's program from `input` until it blocks or ends. */
  #step(slot: CoreSlot, input: unknown): void {
    const now = this.#now;
    const num = this.#num;
    const row = slot.row;
    let value = input;
    if (num[row + INSTANT] !== now) {
      num[row + INSTANT] = now;
      num[row + OPS_AT_INSTANT] = 0;
    }
    for (;;) {
      let next: IteratorResult<unknown, unknown>;
      try {
        next = slot.gen.next(value);
      } catch (e) {
        this.#fail(slot, e);
      }
      if (typeof next !== "object" || next === null) {
        this.#fail(slot, new ProgramError(`the program's next() returned ${describe(next)}`));
      }
      if (next.done) {
        this.#send(slot, { type: "FINISH", at: now });
        return;
      }
      const op = next.value;
      // The stack took (claimed) every operation it hands over as this core's.
      if (op instanceof Refused) this.#refuse(slot, op.op, op.issuer);
      if (!isHandleOperation(op)) this.#refuse(slot, op, undefined);
      const changed = intact(op, slot.id, this.#topology.coreCount);
      if (changed !== undefined) {
        this.#fail(
          slot,
          new ProgramError(
            `core ${slot.id} at t=${now}s: a ${
              String(op.kind)
            } operation was changed after its checks (${changed}); build a new one`,
          ),
        );
      }
      const { kind } = op as Operation;
      num[row + OPS]++;
      if (++this.#ops > this.#limits.maxOps) {
        throw new RunLimitError(
          `programs issued more than ${this.#limits.maxOps} operations (core ${slot.id} at ` +
            `t=${now}s); raise limits.maxOps if that is intended`,
        );
      }
      if (++num[row + OPS_AT_INSTANT] > this.#limits.maxOpsPerInstant) {
        throw new RunLimitError(
          `core ${slot.id} issued more than ${this.#limits.maxOpsPerInstant} operations at ` +
            `t=${now}s without simulated time passing (a loop that never waits, or messages ` +
            "that take no time?); raise limits.maxOpsPerInstant if that is intended",
        );
      }
      switch (kind) {
        case "send": {
          const { peer, tag, payload, bytes } = op as Operation;
          this.#post(slot, peer, tag, payload, bytes);
          value = undefined;
          continue;
        }
        case "recv": {
          const { peer, tag } = op as Operation;
          const channel = this.#channel(peer, tag);
          const queue = slot.mailbox?.get(channel);
          if (queue !== undefined) {
            value = queue.shift();
            if (queue.length === 0) slot.mailbox!.delete(channel);
            this.#pending--;
            // Draining messages that already arrived is finite work: not a runaway loop.
            num[row + OPS_AT_INSTANT]--;
            continue;
          }
          num[row + WAIT_CHANNEL] = channel;
          num[row + BLOCKED_SINCE] = now;
          this.#send(slot, { type: "RECV_WAIT", at: now, from: peer, tag });
          return;
        }
        case "compute": {
          const { flops, bytes, dtype, efficiency, label } = op as Operation;
          const hw = this.#topology.hardware;
          const rate = this.#peakFlops * (dtype === "f32" ? hw.f32FlopsFraction : 1) *
            (efficiency || hw.computeEfficiency);
          const seconds = Math.max(flops / rate, bytes / this.#hbmRate);
          if (seconds === 0) {
            num[row + FLOPS] += flops;
            value = 0;
            continue;
          }
          num[row + PENDING_FLOPS] = flops;
          this.#block(slot, "compute", label, now + seconds, seconds);
          this.#send(slot, { type: "COMPUTE", at: now, label });
          return;
        }
        case "flush":
          value = undefined;
          if (num[row + SENDS_DONE_AT] <= now) continue;
          this.#block(slot, "send", "flush", num[row + SENDS_DONE_AT], undefined);
          this.#send(slot, { type: "SEND_WAIT", at: now, label: "flush" });
          return;
        case "alloc": {
          const { bytes, category, label } = op as Operation;
          const ledger = slot.actor.getSnapshot().context.ledger;
          if (!fits(ledger, bytes)) {
            const error = new OutOfMemoryError(slot.id, now, { bytes, category, label }, ledger);
            this.#send(slot, { type: "OUT_OF_MEMORY", at: now, reason: error.message });
            throw new RunStopped(error);
          }
          this.#send(slot, { type: "ALLOC", at: now, bytes, category });
          this.#trace?.memory(slot.id, now, slot.actor.getSnapshot().context.ledger);
          value = undefined;
          continue;
        }
        case "free": {
          const { bytes, category, label } = op as Operation;
          const held = slot.actor.getSnapshot().context.ledger.live[category];
          if (bytes > held) {
            this.#fail(
              slot,
              new ProgramError(
                `core ${slot.id} at t=${now}s: free "${label}" of ${bytes} bytes of ` +
                  `${category}, but only ${held} are allocated`,
              ),
            );
          }
          this.#send(slot, { type: "FREE", at: now, bytes, category });
          this.#trace?.memory(slot.id, now, slot.actor.getSnapshot().context.ledger);
          value = undefined;
          continue;
        }
      }
    }
  }

  /** A yielded value the runtime will not run: say why, naming the core. */
  #refuse(slot: CoreSlot, op: unknown, issuer: ProgramHandle | undefined): never {
    const why = !isHandleOperation(op)
      ? `yielded ${describe(op)}, not an operation: use yield* with the core handle's ` +
        "methods (yield* core.compute(...))"
      : issuer === undefined
      ? `yielded a ${op.kind} operation that already ran; call the core handle again for another`
      : `yielded a ${op.kind} operation built by core ${issuer.id}'s handle` +
        (this.#slots[issuer.id]?.handle === issuer ? "" : " in another run");
    this.#fail(slot, new ProgramError(`core ${slot.id} at t=${this.#now}s: ${why}`));
  }

  #channel(from: number, tag: Tag): number {
    let index = this.#tagIndex.get(tag);
    if (index === undefined) this.#tagIndex.set(tag, index = this.#tagIndex.size);
    return index * this.#topology.coreCount + from;
  }

  #block(slot: CoreSlot, on: "compute" | "send", label: string, until: number, value: unknown) {
    slot.blockedOn = on;
    slot.blockLabel = label;
    this.#num[slot.row + BLOCKED_SINCE] = this.#now;
    slot.resumeValue = value;
    this.#queue.push(until, slot);
  }

  /** Books the route's links and schedules the arrival. */
  #post(slot: CoreSlot, to: number, tag: Tag, payload: unknown, bytes: number): void {
    if (++this.#pending > this.#limits.maxPendingMessages) {
      throw new RunLimitError(
        `more than ${this.#limits.maxPendingMessages} messages are in flight or unreceived ` +
          `(core ${slot.id} at t=${this.#now}s); raise limits.maxPendingMessages if intended`,
      );
    }
    const now = this.#now;
    const num = this.#num;
    const route = this.#route;
    const hops = this.#topology.routeInto(slot.id, to, route);
    let head = now; // when the head reaches the next link
    let start = now;
    let duration = 0;
    let injectEnd = now;
    let injectStart = now;
    for (let i = 0; i < hops; i++) {
      const link = route[i];
      duration = bytes / this.#bandwidth[link];
      start = this.#calendar.reserve(link, head, duration, now);
      if (i === 0) {
        injectStart = start;
        injectEnd = start + duration;
      }
      head = start + this.#latency[link];
    }
    // A short message may find a gap a longer, earlier one could not: never let it overtake
    // an earlier message between the same two cores (receivers match in send order). A message
    // held back waits in the receiving chip's buffer; its bytes crossed the link at `landed`.
    const landed = head + duration;
    const order = slot.lastArrival ??= new Map();
    const arrival = Math.max(landed, order.get(to) ?? 0);
    order.set(to, arrival);
    if (injectEnd > num[slot.row + SENDS_DONE_AT]) num[slot.row + SENDS_DONE_AT] = injectEnd;
    num[slot.row + MESSAGES_SENT]++;
    num[slot.row + BYTES_SENT] += bytes;
    const channel = this.#channel(slot.id, tag);
    const data = snapshotPayload(payload);
    const msg = new Envelope(slot.id, to, tag, channel, data, bytes, now, arrival);
    this.#queue.push(arrival, msg);
    this.#trace?.transfer(
      this.#flows++,
      msg,
      route[0],
      route[hops - 1],
      injectStart,
      injectEnd,
      landed - duration,
      landed,
    );
  }

  /** The program threw (or asked for something impossible): the core fails, the run stops. */
  #fail(slot: CoreSlot, cause: unknown): never {
    // Errors raised for a core already name it; anything else is wrapped so that it does.
    const message = messageOf(cause);
    const named = cause instanceof ProgramError && message.startsWith(`core ${slot.id} `);
    const error = named ? cause : new ProgramError(
      `core ${slot.id} at t=${this.#now}s: ${
        cause instanceof ProgramError ? "" : "program threw: "
      }${message}`,
      { cause },
    );
    this.#send(slot, { type: "FAIL", at: this.#now, reason: error.message });
    throw error;
  }

  /** With no event left, any core still waiting can never wake: report the wait-for graph. */
  #detectDeadlock(): DeadlockError | undefined {
    const waits: WaitEdge[] = [];
    for (const slot of this.#slots) {
      if (this.#num[slot.row + WAIT_CHANNEL] < 0) continue;
      const { from, tag } = slot.actor.getSnapshot().context.waitingFor!;
      waits.push({
        core: slot.id,
        from,
        tag,
        fromState: this.#slots[from].actor.getSnapshot().value,
        unreceived: this.#unreceived(slot).map(({ from, tag, count }) => ({ from, tag, count })),
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

  #unreceived(slot: CoreSlot): UnreceivedMessages[] {
    return [...(slot.mailbox?.values() ?? [])].map((queue) => ({
      to: slot.id,
      from: queue[0].from,
      tag: queue[0].tag,
      count: queue.length,
      bytes: queue.reduce((sum, m) => sum + m.bytes, 0),
    }));
  }

  #report(): RunReport {
    const num = this.#num;
    let simulatedSeconds = this.#now;
    const totals = { ops: 0, events: 0, messages: 0, bytes: 0, flops: 0 };
    const cores = this.#slots.map((slot): CoreReport => {
      const { value, context } = slot.actor.getSnapshot();
      const at = (field: number) => num[slot.row + field];
      simulatedSeconds = Math.max(simulatedSeconds, context.clock);
      totals.ops += at(OPS);
      totals.events += at(ACTOR_EVENTS);
      totals.messages += at(MESSAGES_SENT);
      totals.bytes += at(BYTES_SENT);
      totals.flops += at(FLOPS);
      return {
        id: slot.id,
        state: value,
        clock: context.clock,
        ...(context.reason === undefined ? {} : { reason: context.reason }),
        liveBytes: context.ledger.live,
        peakBytes: context.ledger.peak,
        peakTotalBytes: context.ledger.peakTotal,
        budgetBytes: context.ledger.budget,
        ops: at(OPS),
        actorEvents: at(ACTOR_EVENTS),
        messagesSent: at(MESSAGES_SENT),
        bytesSent: at(BYTES_SENT),
        messagesReceived: at(MESSAGES_RECEIVED),
        bytesReceived: at(BYTES_RECEIVED),
        flops: at(FLOPS),
        computeSeconds: at(COMPUTE_SECONDS),
        waitSeconds: at(WAIT_SECONDS),
        sendSeconds: at(SEND_SECONDS),
      };
    });
    return {
      simulatedSeconds,
      cores,
      totals,
      unreceived: this.#slots.flatMap((slot) => this.#unreceived(slot)),
      ...(this.#trace ? { trace: this.#trace.events } : {}),
    };
  }
}

/** An error's message, or a description of whatever was thrown; never throws itself. */
function messageOf(thrown: unknown): string {
  try {
    return thrown instanceof Error ? String(thrown.message) : describe(thrown);
  } catch {
    return "(an error whose message cannot be read)";
  }
}

function positiveLimit(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!(v > 0)) throw new OptionsError(`limits.${name} must be a positive number, got ${value}`);
  return v;
}

/**
 * Runs an SPMD program on every core of a topology and returns what happened. A deadlock or
 * an out-of-memory is a result (`status`, `error`, each core's `state`), not an exception; bad
 * options raise {@linkcode OptionsError}, a program that throws or asks for something
 * impossible raises {@linkcode ProgramError}, and passing a limit raises
 * {@linkcode RunLimitError}. After a failed run the programs are abandoned: their `finally`
 * blocks do not run.
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
 * Throws unless the run completed with every message received: the run's own error for a
 * deadlock or an out-of-memory, a {@linkcode ProgramError} for unreceived messages. For callers
 * that treat any of those as a failure.
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
  if (result.unreceived.length > 0) {
    const listed = result.unreceived.slice(0, 8).map((u) =>
      `${u.count} from core ${u.from} to core ${u.to} tag ${JSON.stringify(u.tag)}`
    );
    const more = result.unreceived.length > 8 ? `, and ${result.unreceived.length - 8} more` : "";
    throw new ProgramError(`messages were sent but never received: ${listed.join(", ")}${more}`);
  }
  return result;
}
