/**
 * Chrome trace-event output (opens in ui.perfetto.dev and chrome://tracing): one process per
 * core with an "exec" thread (compute, waits, flushes) and one thread per link direction the core
 * sends or receives on, flow arrows from each send to its arrival, and a memory counter per core.
 * Timestamps are simulated microseconds.
 *
 * @module
 */

import type { Topology } from "../topology/topology.ts";
import type { Tag } from "./core_machine.ts";
import type { MemoryLedger } from "./memory_ledger.ts";

/** One Chrome trace event (the fields podsim writes). */
export interface TraceEvent {
  /** Event name. */
  readonly name: string;
  /** Category. */
  readonly cat?: string;
  /** Phase: X complete, M metadata, C counter, s / f flow start / end. */
  readonly ph: "X" | "M" | "C" | "s" | "f";
  /** Start, simulated microseconds. */
  readonly ts?: number;
  /** Duration, simulated microseconds (X events). */
  readonly dur?: number;
  /** Process id: the core id. */
  readonly pid: number;
  /** Thread id: 0 = exec; 1... = outgoing per link direction; 1001... = incoming. */
  readonly tid?: number;
  /** Flow id (s / f events). */
  readonly id?: number;
  /** Flow binding point ("e": the enclosing slice). */
  readonly bp?: "e";
  /** Extra fields shown in the viewer. */
  readonly args?: Readonly<Record<string, unknown>>;
}

const EXEC = 0;
const us = (seconds: number) => seconds * 1e6;

/**
 * Collects trace events during a run. Slices on one thread must nest, so transfers go on one
 * thread per link direction: a link carries one transfer at a time, so its slices never overlap
 * ("out +x" on the sender for the first link, "in -x" on the receiver for the last one).
 */
export class TraceRecorder {
  readonly events: TraceEvent[] = [];
  readonly #topology: Topology;
  readonly #named = new Set<number>();

  constructor(topology: Topology) {
    this.#topology = topology;
    for (let id = 0; id < topology.coreCount; id++) {
      const { x, y, core } = topology.coreCoord(id);
      this.events.push(
        {
          name: "process_name",
          ph: "M",
          pid: id,
          args: { name: `core ${id} (x${x} y${y} c${core})` },
        },
        { name: "process_sort_index", ph: "M", pid: id, args: { sort_index: id } },
        { name: "thread_name", ph: "M", pid: id, tid: EXEC, args: { name: "exec" } },
      );
    }
  }

  /** A slice on a core's exec thread: compute, a blocked receive or a blocked flush. */
  slice(
    core: number,
    cat: "compute" | "wait" | "send",
    name: string,
    start: number,
    end: number,
    args?: Record<string, unknown>,
  ): void {
    this.events.push({
      name,
      cat,
      ph: "X",
      ts: us(start),
      dur: us(end - start),
      pid: core,
      tid: EXEC,
      args,
    });
  }

  /**
   * A transfer: the sender's slice while its first link carries the bytes, the receiver's slice
   * while they arrive over the last link, and a flow arrow between them.
   */
  transfer(
    flow: number,
    message: { from: number; to: number; tag: Tag; bytes: number },
    firstLink: number,
    lastLink: number,
    injectStart: number,
    injectEnd: number,
    tailStart: number,
    arrival: number,
  ): void {
    const { from, to, tag, bytes } = message;
    const out = this.#thread(from, "out", firstLink);
    const into = this.#thread(to, "in", lastLink);
    const args = { from, to, tag, bytes };
    this.events.push(
      {
        name: `send to ${to}`,
        cat: "send",
        ph: "X",
        ts: us(injectStart),
        dur: us(injectEnd - injectStart),
        pid: from,
        tid: out,
        args,
      },
      { name: "message", cat: "send", ph: "s", ts: us(injectStart), pid: from, tid: out, id: flow },
      {
        name: `arrive from ${from}`,
        cat: "recv",
        ph: "X",
        ts: us(tailStart),
        dur: us(arrival - tailStart),
        pid: to,
        tid: into,
        args,
      },
      {
        name: "message",
        cat: "send",
        ph: "f",
        bp: "e",
        ts: us(tailStart),
        pid: to,
        tid: into,
        id: flow,
      },
    );
  }

  /** The core's live memory by category, after a change. */
  memory(core: number, time: number, ledger: MemoryLedger): void {
    this.events.push({
      name: "memory (bytes)",
      ph: "C",
      ts: us(time),
      pid: core,
      args: { ...ledger.live },
    });
  }

  /** The thread id of a core's "out" or "in" track for a link's direction, named on first use. */
  #thread(core: number, way: "out" | "in", link: number): number {
    const direction = this.#topology.linkDirection(link);
    // ICI: one thread per direction. On-chip: one per peer core (a chip may have several).
    let lane = ["+x", "-x", "+y", "-y"].indexOf(direction);
    let name = `${way} ${direction}`;
    if (lane < 0) {
      const [from, to] = this.#topology.link(link).cores!;
      const peer = way === "out" ? to : from;
      lane = 4 + peer;
      name = `${way} on-chip ${way === "out" ? "to" : "from"} core ${peer} of the chip`;
    }
    const tid = (way === "out" ? 1 : 1001) + lane;
    const key = core * 2048 + tid;
    if (!this.#named.has(key)) {
      this.#named.add(key);
      this.events.push({ name: "thread_name", ph: "M", pid: core, tid, args: { name } });
    }
    return tid;
  }
}

/**
 * Serialises trace events as Chrome trace-event JSON.
 *
 * @example
 * ```ts
 * import { runProgram, sliceTopology, toChromeTraceJson } from "@podsim/podsim";
 * const result = runProgram(sliceTopology("v3-8"), function* (core) {
 *   yield* core.compute({ flops: 1e9, label: "matmul" });
 * }, { trace: true });
 * const json = toChromeTraceJson(result.trace ?? []);
 * console.log(JSON.parse(json).traceEvents.length > 0); // true
 * ```
 */
export function toChromeTraceJson(events: readonly TraceEvent[]): string {
  return JSON.stringify({ displayTimeUnit: "ns", traceEvents: events });
}
