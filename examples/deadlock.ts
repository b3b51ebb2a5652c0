/**
 * A program that deadlocks on a v3-8, and what podsim says about it.
 *
 * Every core runs a naive ring exchange: receive the neighbour's block, then pass its own on.
 * Each core waits for the previous one before sending, so nobody ever sends: the run ends in a
 * deadlock, and podsim prints the wait-for graph instead of hanging. The same exchange with the
 * send first (sends are non-blocking DMAs) completes.
 *
 *   deno run examples/deadlock.ts
 *
 * Exits 0: the deadlock is the expected outcome.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { PodsimError, type Program, runProgram, sliceTopology } from "../mod.ts";

const USAGE = `Usage: deno run examples/deadlock.ts [--slice v3-8] [--help]

Runs a ring exchange that receives before it sends (a deadlock) and prints the wait-for report,
then runs the fixed exchange (send first) and prints its simulated time.

  --slice NAME   TPU v3 slice to run on: v3-8 (default), v3-32, v3-128, v3-512, v3-2048
  --help         this text`;

/** Runs the example; returns the exit code. `print` and `fail` receive its output lines. */
export function main(
  args: string[],
  print: (line: string) => void = console.log,
  fail: (line: string) => void = console.error,
): number {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: { slice: { type: "string", default: "v3-8" }, help: { type: "boolean" } },
      strict: true,
    }));
  } catch (e) {
    fail(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    print(USAGE);
    return 0;
  }
  let topology;
  try {
    topology = sliceTopology(values.slice);
  } catch (e) {
    if (!(e instanceof PodsimError)) throw e;
    fail(`${e.message}\n\n${USAGE}`);
    return 2;
  }
  const bytes = 4 * 2 ** 20;

  const receiveFirst: Program = function* (core) {
    const n = core.coreCount;
    yield* core.recv((core.id + n - 1) % n, "block");
    yield* core.send((core.id + 1) % n, undefined, { bytes, tag: "block" });
  };
  const sendFirst: Program = function* (core) {
    const n = core.coreCount;
    yield* core.send((core.id + 1) % n, undefined, { bytes, tag: "block" });
    yield* core.recv((core.id + n - 1) % n, "block");
  };

  print(`ring exchange of 4 MiB blocks on ${topology.name} (${topology.coreCount} cores)\n`);
  const broken = runProgram(topology, receiveFirst);
  print(`receive first: ${broken.status}`);
  if (broken.error) print(broken.error.message);
  const states = Map.groupBy(broken.cores, (c) => c.state);
  print(`core states: ${[...states].map(([s, cores]) => `${cores.length} ${s}`).join(", ")}\n`);

  const fixed = runProgram(topology, sendFirst);
  print(
    `send first: ${fixed.status} in ${(fixed.simulatedSeconds * 1e6).toFixed(2)} us simulated, ` +
      `${fixed.totals.messages} messages, ${fixed.totals.bytes} bytes`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
