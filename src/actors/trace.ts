/**
 * Chrome trace-event output (opens in ui.perfetto.dev and chrome://tracing): one process per
 * core with an "exec" thread (compute, waits) and a "dma" thread (outgoing transfers and
 * arrivals), flow arrows from each send to its arrival, and a memory counter per core.
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
  /** Thread id: 0 = exec, 1 = dma. */
  readonly tid?: number;
  /** Flow id (s / f events). */
  readonly id?: number;
  /** Flow binding point ("e": the enclosing slice). */
  readonly bp?: "e";
  /** Extra fields shown in the viewer. */
  readonly args?: Readonly<Record<string, unknown>>;
}

const EXEC = 0;
const DMA = 1;
const us = (seconds: number) => seconds * 1e6;

/** Collects trace events during a run. */
export class TraceRecorder {
  readonly events: TraceEvent[] = [];

  constructor(topology: Topology) {
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
        { name: "thread_name", ph: "M", pid: id, tid: DMA, args: { name: "dma" } },
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

  /** A transfer: the sender's DMA slice, the arrival slice at the receiver, and a flow arrow. */
  transfer(
    flow: number,
    from: number,
    to: number,
    tag: Tag,
    bytes: number,
    injectStart: number,
    injectEnd: number,
    tailStart: number,
    arrival: number,
  ): void {
    const args = { from, to, tag, bytes };
    this.events.push(
      {
        name: `send to ${to}`,
        cat: "send",
        ph: "X",
        ts: us(injectStart),
        dur: us(injectEnd - injectStart),
        pid: from,
        tid: DMA,
        args,
      },
      { name: "message", cat: "send", ph: "s", ts: us(injectStart), pid: from, tid: DMA, id: flow },
      {
        name: `arrive from ${from}`,
        cat: "recv",
        ph: "X",
        ts: us(tailStart),
        dur: us(arrival - tailStart),
        pid: to,
        tid: DMA,
        args,
      },
      {
        name: "message",
        cat: "send",
        ph: "f",
        bp: "e",
        ts: us(tailStart),
        pid: to,
        tid: DMA,
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
