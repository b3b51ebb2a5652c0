/**
 * A core's memory ledger: live and peak bytes by category against a budget. Pure functions on
 * immutable values, so the ledger can live in the core actor's xstate context.
 *
 * @module
 */

import { PodsimError } from "../errors.ts";

/**
 * What a block of HBM holds. "weights" are replicated parameters; "sharded weights" are
 * parameter tiles split over cores (GShard's expert weights).
 */
export type MemoryCategory =
  | "weights"
  | "sharded weights"
  | "activations"
  | "optimizer"
  | "gradients"
  | "temporaries"
  | "buffers";

/**
 * Every memory category, in report order.
 *
 * @example
 * ```ts
 * import { MEMORY_CATEGORIES } from "@podsim/podsim";
 * console.log(MEMORY_CATEGORIES.join(", ")); // weights, sharded weights, activations, ...
 * ```
 */
export const MEMORY_CATEGORIES: readonly MemoryCategory[] = Object.freeze([
  "weights",
  "sharded weights",
  "activations",
  "optimizer",
  "gradients",
  "temporaries",
  "buffers",
]);

/** Bytes per category. */
export type BytesByCategory = Readonly<Record<MemoryCategory, number>>;

/** Live and peak bytes by category, the peak of their sum, and the budget. */
export interface MemoryLedger {
  /** Bytes held now, by category. */
  readonly live: BytesByCategory;
  /** Highest bytes held at once, by category. */
  readonly peak: BytesByCategory;
  /** Bytes held now, all categories. */
  readonly liveTotal: number;
  /** Highest bytes held at once, all categories (not the sum of per-category peaks). */
  readonly peakTotal: number;
  /** Capacity in bytes (HBM per core). */
  readonly budget: number;
}

const ZERO: BytesByCategory = Object.freeze({
  weights: 0,
  "sharded weights": 0,
  activations: 0,
  optimizer: 0,
  gradients: 0,
  temporaries: 0,
  buffers: 0,
});

/** An empty ledger with the given budget. */
export function emptyLedger(budget: number): MemoryLedger {
  return { live: ZERO, peak: ZERO, liveTotal: 0, peakTotal: 0, budget };
}

/** True when `category` is one of {@linkcode MEMORY_CATEGORIES}. */
export function isMemoryCategory(category: unknown): category is MemoryCategory {
  return typeof category === "string" && Object.hasOwn(ZERO, category);
}

/** Whether `bytes` more fit under the budget. */
export function fits(ledger: MemoryLedger, bytes: number): boolean {
  return ledger.liveTotal + bytes <= ledger.budget;
}

/** The ledger after allocating `bytes` of `category` (the caller has checked that it fits). */
export function allocate(
  ledger: MemoryLedger,
  category: MemoryCategory,
  bytes: number,
): MemoryLedger {
  const held = ledger.live[category] + bytes;
  const liveTotal = ledger.liveTotal + bytes;
  return {
    live: { ...ledger.live, [category]: held },
    peak: held > ledger.peak[category] ? { ...ledger.peak, [category]: held } : ledger.peak,
    liveTotal,
    peakTotal: Math.max(ledger.peakTotal, liveTotal),
    budget: ledger.budget,
  };
}

/** The ledger after freeing `bytes` of `category` (the caller has checked they are held). */
export function release(
  ledger: MemoryLedger,
  category: MemoryCategory,
  bytes: number,
): MemoryLedger {
  return {
    ...ledger,
    live: { ...ledger.live, [category]: ledger.live[category] - bytes },
    liveTotal: ledger.liveTotal - bytes,
  };
}

/**
 * Formats a byte count with a binary unit.
 *
 * @example
 * ```ts
 * import { formatBytes } from "@podsim/podsim";
 * console.log(formatBytes(1.5 * 2 ** 30)); // "1.50 GiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(2)} ${units[u]}`;
}

/** One line per category with live bytes, and the totals against the budget. */
export function describeLedger(ledger: MemoryLedger): string {
  const rows = MEMORY_CATEGORIES.map((c) =>
    `  ${c.padEnd(15)} live ${formatBytes(ledger.live[c]).padStart(11)}  peak ${
      formatBytes(ledger.peak[c]).padStart(11)
    }`
  );
  rows.push(
    `  ${"total".padEnd(15)} live ${formatBytes(ledger.liveTotal).padStart(11)}  peak ${
      formatBytes(ledger.peakTotal).padStart(11)
    }  budget ${formatBytes(ledger.budget)}`,
  );
  return rows.join("\n");
}

/**
 * A core asked for more HBM than its budget has left. The core is in the `out_of_memory`
 * state; the error names it, the request, and carries the ledger at that moment.
 *
 * @example
 * ```ts
 * import { OutOfMemoryError, runProgram, sliceTopology } from "@podsim/podsim";
 * const result = runProgram(sliceTopology("v3-8"), function* (core) {
 *   yield* core.alloc(20 * 2 ** 30, "activations", "too big");
 * });
 * console.log(result.status, result.error instanceof OutOfMemoryError); // out_of_memory true
 * ```
 */
export class OutOfMemoryError extends PodsimError {
  /** The core that ran out of memory. */
  readonly core: number;
  /** Its ledger just before the failed allocation. */
  readonly ledger: MemoryLedger;
  /** The allocation that did not fit. */
  readonly request: {
    readonly bytes: number;
    readonly category: MemoryCategory;
    readonly label: string;
  };
  /** Simulated time of the failed allocation, seconds. */
  readonly time: number;

  /** Creates the error; the message lists the ledger. */
  constructor(
    core: number,
    time: number,
    request: { bytes: number; category: MemoryCategory; label: string },
    ledger: MemoryLedger,
  ) {
    super(
      `core ${core} out of memory at t=${time}s: "${request.label}" asked for ` +
        `${formatBytes(request.bytes)} of ${request.category} with ` +
        `${formatBytes(ledger.budget - ledger.liveTotal)} of ${formatBytes(ledger.budget)} free\n` +
        describeLedger(ledger),
    );
    this.core = core;
    this.time = time;
    this.request = request;
    this.ledger = ledger;
  }
}
