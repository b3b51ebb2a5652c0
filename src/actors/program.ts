/**
 * SPMD programs: one generator function runs on every core with that core's handle. A program
 * `yield*`s the handle's operations; the runtime resumes it when the operation completes in
 * simulated time. Generators (not async functions) keep the scheduler synchronous and
 * deterministic, and let collectives compose as plain `yield*` sub-programs.
 *
 * @module
 */

import { ProgramError } from "../errors.ts";
import type { CoreCoord, Topology } from "../topology/topology.ts";
import type { Tag } from "./core_machine.ts";
import { isMemoryCategory, MEMORY_CATEGORIES, type MemoryCategory } from "./memory_ledger.ts";

/** Number formats the compute clock distinguishes. */
export type Dtype = "f32" | "bf16";

/** A block of compute: its FLOPs and HBM bytes set its time on the roofline. */
export interface ComputeRequest {
  /** Floating-point operations. Default 0. */
  readonly flops?: number;
  /** Bytes moved to and from HBM. Default 0. */
  readonly bytes?: number;
  /** Name in traces and reports. Default "compute". */
  readonly label?: string;
  /** Matmul number format; f32 runs at the hardware's f32 fraction of peak. Default bf16. */
  readonly dtype?: Dtype;
  /** Fraction of peak FLOP/s reached; defaults to the hardware's computeEfficiency. */
  readonly efficiency?: number;
}

/** Options of a send. */
export interface SendOptions {
  /** Receivers match on (source, tag). Default "". */
  readonly tag?: Tag;
  /**
   * Bytes on the wire. Defaults to the payload's byteLength when it is a typed array; required
   * otherwise (shape-only mode sends no data, only a byte count).
   */
  readonly bytes?: number;
}

/** A message as the receiver gets it. */
export interface Message<P = unknown> {
  /** Sender's core id. */
  readonly from: number;
  /** Receiver's core id. */
  readonly to: number;
  /** Tag the receiver matched on. */
  readonly tag: Tag;
  /** The data (a copy, for typed arrays), or undefined in shape-only mode. */
  readonly payload: P;
  /** Bytes on the wire. */
  readonly bytes: number;
  /** Simulated time the send was issued, seconds. */
  readonly sentAt: number;
  /** Simulated time the last byte arrived, seconds. */
  readonly arrivedAt: number;
}

/** What an operation asks for. */
export type OperationKind = "compute" | "alloc" | "free" | "send" | "flush" | "recv" | "call";

// Only this module can build operations: the constructor demands this token, so a program
// cannot forge one (say through `op.constructor`) with arguments nobody checked.
const ISSUE: unique symbol = Symbol("podsim operation");
// Set in Operation's static block: the brand check (no Proxy trap can fool or throw from it),
// and the one way to read and clear an operation's issuer.
let isOperation: (value: unknown) => value is Operation;
let claim: (op: Operation) => ProgramHandle | undefined;

/**
 * One request from a program to the runtime, used with `yield*`: it yields itself once, and
 * `yield*` evaluates to the runtime's answer (`R`). Only the core handle builds these, after
 * checking the arguments; the runtime accepts each one once, from the core whose handle built
 * it. Being its own iterator, an operation costs one small object instead of a generator per
 * call, and one class with every field keeps the runtime's dispatch monomorphic.
 *
 * @example
 * ```ts
 * import { runProgram, sliceTopology } from "@podsim/podsim";
 * runProgram(sliceTopology("v3-8"), function* (core) {
 *   const seconds = yield* core.compute({ flops: 61.5e9 }); // an Operation<number>
 *   console.assert(seconds === 1e-3);
 * });
 * ```
 */
export class Operation<R = unknown> implements IterableIterator<Operation, R, unknown> {
  #issuer: ProgramHandle | undefined;
  #yielded = false;

  static {
    isOperation = (value): value is Operation =>
      typeof value === "object" && value !== null && #issuer in value;
    claim = (op) => {
      const issuer = op.#issuer;
      op.#issuer = undefined;
      return issuer;
    };
  }

  /** Builds a request; only the core handle can (it holds the token). */
  constructor(
    token: typeof ISSUE,
    issuer: ProgramHandle,
    /** What is asked. */
    readonly kind: OperationKind,
    /** send: destination core; recv: source core; otherwise -1. */
    readonly peer: number,
    /** send / recv: the tag. */
    readonly tag: Tag,
    /** send: the data. */
    readonly payload: unknown,
    /** compute: HBM bytes; alloc / free / send: bytes. */
    readonly bytes: number,
    /** compute: FLOPs. */
    readonly flops: number,
    /** compute / alloc / free: the label in reports. */
    readonly label: string,
    /** compute: the number format. */
    readonly dtype: Dtype,
    /** compute: fraction of peak, or 0 for the hardware's default. */
    readonly efficiency: number,
    /** alloc / free: the memory category. */
    readonly category: MemoryCategory,
  ) {
    if (token !== ISSUE) throw new ProgramError("operations are built by the core handle only");
    // The handle checked these fields. They are readonly but not frozen (freezing every one of
    // millions of operations cost a tenth of a pod-scale run): the runtime checks them again
    // when it takes the operation (see intact), so one changed after its checks never runs.
    this.#issuer = issuer;
  }

  /** `yield*` starts here. An operation runs once: a second `yield*` would silently do nothing. */
  [Symbol.iterator](): this {
    if (this.#yielded) {
      throw new ProgramError(
        `this ${this.kind} operation was already run; call the core handle again for another`,
      );
    }
    return this;
  }

  /**
   * A call's sub-program threw: `yield*` passes the exception here, and it goes on into the
   * program at its `yield*`, as if the sub-program had been delegated to directly.
   */
  throw(error: unknown): IteratorResult<Operation, R> {
    throw error;
  }

  /** First call: hand this request to the runtime. Second: return the runtime's answer. */
  next(answer?: unknown): IteratorResult<Operation, R> {
    if (this.#yielded) return { value: answer as R, done: true };
    this.#yielded = true;
    return { value: this, done: false };
  }
}

/** Whether `value` is an operation built by a core handle (a brand check, Proxy-safe). */
export function isHandleOperation(value: unknown): value is Operation {
  return isOperation(value);
}

/**
 * For the runtime, as it takes `op` from core `id` of `coreCount`: undefined when its fields are
 * still what the handle checked (a known kind, amounts finite and >= 0, whole byte counts, a
 * known category, a peer that is another core), else what is wrong with it.
 */
export function intact(op: Operation, id: number, coreCount: number): string | undefined {
  const { kind, bytes } = op;
  const amount = (v: number, whole: boolean) =>
    typeof v === "number" && v >= 0 && v < Infinity && (!whole || Number.isInteger(v));
  switch (kind) {
    case "compute":
      return amount(op.flops, false) && amount(bytes, false) ? undefined : "its amounts";
    case "alloc":
    case "free":
      return amount(bytes, true) && isMemoryCategory(op.category) ? undefined : "its bytes";
    case "send":
    case "recv": {
      const { peer } = op;
      const ok = Number.isInteger(peer) && peer >= 0 && peer < coreCount && peer !== id &&
        (kind === "recv" || amount(bytes, true));
      return ok ? undefined : "its peer or bytes";
    }
    case "flush":
    case "call":
      return undefined;
    default:
      return "its kind";
  }
}

/** Calls a program may make in a row without any operation in between. */
const MAX_CALLS_WITHOUT_OPERATION = 1e6;

/**
 * A core's running program with the sub-programs it called ({@linkcode CoreHandle.call}): the
 * runtime and the explorer step this instead of the program's generator. It runs calls itself
 * (pushing the sub-program, resuming the caller with its return value or its exception) and
 * hands back every other operation, after checking it is one of `handle`'s.
 */
export class ProgramStack {
  readonly #stack: ProgramGenerator<unknown>[];
  readonly #handle: ProgramHandle;

  constructor(program: ProgramGenerator<unknown>, handle: ProgramHandle) {
    this.#stack = [program];
    this.#handle = handle;
  }

  /**
   * Resumes the program with `value`; returns its next operation other than a call (taken:
   * its issuer is cleared, so no operation runs twice), whatever else it yielded, or its end.
   */
  next(value: unknown): IteratorResult<unknown, unknown> {
    const stack = this.#stack;
    let error: unknown;
    let throwing = false;
    // Calls that return without an operation are finite work, but not endless: a program
    // that only ever calls would otherwise never hand the runtime anything to count.
    let calls = 0;
    for (;;) {
      const top = stack[stack.length - 1];
      let next: IteratorResult<unknown, unknown>;
      try {
        next = throwing ? top.throw(error) : top.next(value);
      } catch (e) {
        stack.pop();
        if (stack.length === 0) throw e;
        [throwing, error] = [true, e];
        continue;
      }
      throwing = false;
      if (next.done) {
        if (stack.length === 1) return next;
        stack.pop();
        value = next.value;
        continue;
      }
      const op = next.value;
      if (!isOperation(op)) return next;
      const issuer = claim(op);
      if (issuer !== this.#handle) {
        // Not ours to run: give the runtime something that says why.
        return { done: false, value: new Refused(op, issuer) };
      }
      if (op.kind !== "call") return next;
      if (++calls > MAX_CALLS_WITHOUT_OPERATION) {
        throw new ProgramError(
          `${MAX_CALLS_WITHOUT_OPERATION} calls in a row ran no operation (an endless loop of ` +
            "empty sub-programs?)",
        );
      }
      stack.push(op.payload as ProgramGenerator<unknown>);
      value = undefined;
    }
  }
}

/** An operation the stack would not run (already taken, or another core's): for the error. */
export class Refused {
  constructor(readonly op: Operation, readonly issuer: ProgramHandle | undefined) {}
}

/** A running program: yields operations, receives their results. */
export type ProgramGenerator<R = void> = Generator<Operation, R, unknown>;

/**
 * An SPMD program: called once per core with its handle.
 *
 * @example
 * ```ts
 * import { type Program, runProgram, sliceTopology } from "@podsim/podsim";
 * // Every core passes a 1 MiB block to the next core id and receives one from the previous.
 * const shift: Program = function* (core) {
 *   const n = core.coreCount;
 *   yield* core.send((core.id + 1) % n, undefined, { bytes: 2 ** 20, tag: "shift" });
 *   const msg = yield* core.recv((core.id + n - 1) % n, "shift");
 *   console.assert(msg.bytes === 2 ** 20);
 * };
 * const result = runProgram(sliceTopology("v3-8"), shift);
 * console.log(result.status); // "completed"
 * ```
 */
export type Program = (core: CoreHandle) => ProgramGenerator;

/** What a program sees of its core. Each operation is used with `yield*`. */
export interface CoreHandle {
  /** This core's device id. */
  readonly id: number;
  /** Number of cores running the program. */
  readonly coreCount: number;
  /** The slice the program runs on. */
  readonly topology: Topology;
  /** This core's chip coordinates and index on its chip. */
  readonly coord: CoreCoord;
  /** The core's simulated clock, seconds. */
  now(): number;
  /** Runs a block of compute; returns its simulated duration in seconds. */
  compute(request: ComputeRequest): Operation<number>;
  /** Allocates HBM; over budget, the core goes to `out_of_memory` and the run stops. */
  alloc(bytes: number, category: MemoryCategory, label?: string): Operation<void>;
  /** Frees HBM allocated earlier in the same category. */
  free(bytes: number, category: MemoryCategory, label?: string): Operation<void>;
  /**
   * Runs a sub-program and evaluates to what it returns, like `yield*` on it, but its
   * operations go straight to the runtime instead of through every generator above it: for a
   * sub-program of many operations (a collective) under a deep call chain.
   */
  call<R>(program: ProgramGenerator<R>): Operation<R>;
  /**
   * Posts a message (a DMA): returns at once, the transfer runs over the links while the
   * program goes on. Typed-array payloads are copied at the send, as a DMA would.
   */
  send(to: number, payload: unknown, options?: SendOptions): Operation<void>;
  /** Waits (state `sending`) until every posted send has left this core. */
  flush(): Operation<void>;
  /** Waits (state `waiting`) for the next message from `from` with `tag` (default ""). */
  recv<P = unknown>(from: number, tag?: Tag): Operation<Message<P>>;
}

/** The prefix of every error a handle raises: the core and its simulated time. */
function where(handle: CoreHandle): string {
  return `core ${handle.id} at t=${handle.now()}s:`;
}

/**
 * An operation's name in an error message. Built only when there is an error: the checks run
 * on every one of millions of operations.
 */
type OpName = string | (() => string);
const nameOf = (op: OpName) => (typeof op === "string" ? op : op());

/** Checks `v` is a finite number >= 0 (an integer for byte counts). */
function checkAmount(handle: CoreHandle, op: OpName, what: string, v: number): void {
  const integer = what === "bytes" && op !== "compute";
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (integer && !Number.isInteger(v))) {
    throw new ProgramError(
      `${where(handle)} ${nameOf(op)} ${what} must be a finite ${
        integer ? "integer" : "number"
      } >= 0, got ${v}`,
    );
  }
}

/** Checks `peer` names another core of the slice. */
function checkPeer(handle: CoreHandle, op: string, peer: number): void {
  if (!Number.isInteger(peer) || peer < 0 || peer >= handle.coreCount) {
    throw new ProgramError(
      `${where(handle)} ${op} core ${peer} does not exist ` +
        `in ${handle.topology.name} (cores 0..${handle.coreCount - 1})`,
    );
  }
  if (peer === handle.id) throw new ProgramError(`${where(handle)} ${op} itself`);
}

function checkTag(handle: CoreHandle, op: string, tag: unknown): void {
  if (typeof tag !== "string" && !(typeof tag === "number" && Number.isFinite(tag))) {
    throw new ProgramError(
      `${where(handle)} ${op} tag must be a string or a finite number, got ${String(tag)}`,
    );
  }
}

function checkCategory(handle: CoreHandle, op: OpName, category: unknown): void {
  if (!isMemoryCategory(category)) {
    throw new ProgramError(
      `${where(handle)} ${nameOf(op)} category "${String(category)}" is not one of ${
        MEMORY_CATEGORIES.join(", ")
      }`,
    );
  }
}

/** Bytes of an ArrayBuffer or a view on one, or undefined. */
function payloadBytes(payload: unknown): number | undefined {
  if (payload instanceof ArrayBuffer) return payload.byteLength;
  return ArrayBuffer.isView(payload) ? payload.byteLength : undefined;
}

/**
 * A copy of an ArrayBuffer or view payload, as a DMA reads it when the send runs: the same
 * element type over fresh memory (a Node Buffer arrives as a Uint8Array). Other payloads pass
 * as they are and must not be changed after the send.
 */
export function snapshotPayload(payload: unknown): unknown {
  if (payload instanceof ArrayBuffer) return payload.slice(0);
  if (!ArrayBuffer.isView(payload)) return payload;
  const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength).slice();
  if (payload instanceof DataView) return new DataView(bytes.buffer);
  const tag = (payload as unknown as { [Symbol.toStringTag]: string })[Symbol.toStringTag];
  const View = (globalThis as unknown as Record<string, new (b: ArrayBuffer) => unknown>)[tag];
  return new View(bytes.buffer);
}

const detached = new WeakMap<CoreHandle, Map<unknown, unknown>>();
const RUN_END = Symbol("podsim run-end checks");

/**
 * Registers a check the runtime calls when a run has completed (every program finished): an
 * error it returns fails the run. For library bookkeeping, such as a collective some cores
 * never joined.
 */
export function onRunEnd(core: CoreHandle, check: () => Error | undefined): void {
  const shared = runShared(core);
  let checks = shared.get(RUN_END) as (() => Error | undefined)[] | undefined;
  if (checks === undefined) shared.set(RUN_END, checks = []);
  checks.push(check);
}

/** The run-end checks registered in a run's shared map (for the runtime). */
export function runEndChecks(shared: Map<unknown, unknown>): readonly (() => Error | undefined)[] {
  return (shared.get(RUN_END) as (() => Error | undefined)[] | undefined) ?? [];
}

/**
 * A map every core of the same run shares, for library bookkeeping that is not simulated (the
 * collectives' agreement check: a debugging aid, like a compiler checking that every SPMD
 * program issues the same collectives). A handle not built by the runtime gets its own map.
 */
export function runShared(core: CoreHandle): Map<unknown, unknown> {
  if (core instanceof ProgramHandle) return core.shared;
  let map = detached.get(core);
  if (map === undefined) detached.set(core, map = new Map());
  return map;
}

/**
 * The handle the runtime gives each core. Operations check their arguments here, in the
 * program's own call, so a bad argument names the core and the operation.
 */
export class ProgramHandle implements CoreHandle {
  readonly id: number;
  readonly coreCount: number;
  readonly topology: Topology;
  readonly #clock: () => number;
  readonly #shared: Map<unknown, unknown>;
  #coord: CoreCoord | undefined;

  /** `shared`: state every core of one run sees (see {@linkcode runShared}). */
  constructor(
    id: number,
    topology: Topology,
    clock: () => number,
    shared: Map<unknown, unknown> = new Map(),
  ) {
    this.id = id;
    this.topology = topology;
    this.coreCount = topology.coreCount;
    this.#clock = clock;
    this.#shared = shared;
  }

  /** The run's shared map (see {@linkcode runShared}). */
  get shared(): Map<unknown, unknown> {
    return this.#shared;
  }

  get coord(): CoreCoord {
    return this.#coord ??= this.topology.coreCoord(this.id);
  }

  now(): number {
    return this.#clock();
  }

  compute(request: ComputeRequest): Operation<number> {
    const flops = request.flops ?? 0;
    const bytes = request.bytes ?? 0;
    checkAmount(this, "compute", "flops", flops);
    checkAmount(this, "compute", "bytes", bytes);
    const dtype = request.dtype ?? "bf16";
    if (dtype !== "bf16" && dtype !== "f32") {
      throw new ProgramError(`${where(this)} compute dtype must be "bf16" or "f32", got ${dtype}`);
    }
    const efficiency = request.efficiency ?? 0;
    if (request.efficiency !== undefined && !(efficiency > 0 && efficiency <= 1)) {
      throw new ProgramError(
        `${where(this)} compute efficiency must be in (0, 1], got ${request.efficiency}`,
      );
    }
    const label = request.label ?? "compute";
    return this.#op("compute", -1, "", undefined, bytes, flops, label, dtype, efficiency);
  }

  alloc(bytes: number, category: MemoryCategory, label: string = category): Operation<void> {
    const op = () => `alloc "${label}"`;
    checkAmount(this, op, "bytes", bytes);
    checkCategory(this, op, category);
    return this.#op("alloc", -1, "", undefined, bytes, 0, label, "bf16", 0, category);
  }

  free(bytes: number, category: MemoryCategory, label: string = category): Operation<void> {
    const op = () => `free "${label}"`;
    checkAmount(this, op, "bytes", bytes);
    checkCategory(this, op, category);
    return this.#op("free", -1, "", undefined, bytes, 0, label, "bf16", 0, category);
  }

  send(to: number, payload: unknown, options: SendOptions = {}): Operation<void> {
    checkPeer(this, "send to", to);
    const tag = options.tag ?? "";
    checkTag(this, "send", tag);
    const bytes = options.bytes ?? payloadBytes(payload);
    if (bytes === undefined) {
      throw new ProgramError(
        `${where(this)} send to core ${to} needs options.bytes (the payload is not a typed array)`,
      );
    }
    checkAmount(this, () => `send to core ${to}`, "bytes", bytes);
    return this.#op("send", to, tag, payload, bytes, 0, "", "bf16", 0);
  }

  flush(): Operation<void> {
    return this.#op("flush", -1, "", undefined, 0, 0, "flush", "bf16", 0);
  }

  call<R>(program: ProgramGenerator<R>): Operation<R> {
    if (typeof (program as { next?: unknown } | null)?.next !== "function") {
      throw new ProgramError(`${where(this)} call needs a generator (a sub-program)`);
    }
    return this.#op("call", -1, "", program, 0, 0, "call", "bf16", 0);
  }

  recv<P = unknown>(from: number, tag: Tag = ""): Operation<Message<P>> {
    checkPeer(this, "recv from", from);
    checkTag(this, "recv", tag);
    return this.#op("recv", from, tag, undefined, 0, 0, "", "bf16", 0);
  }

  #op<R>(
    kind: OperationKind,
    peer: number,
    tag: Tag,
    payload: unknown,
    bytes: number,
    flops: number,
    label: string,
    dtype: Dtype,
    efficiency: number,
    category: MemoryCategory = "buffers",
  ): Operation<R> {
    return new Operation<R>(
      ISSUE,
      this,
      kind,
      peer,
      tag,
      payload,
      bytes,
      flops,
      label,
      dtype,
      efficiency,
      category,
    );
  }
}
