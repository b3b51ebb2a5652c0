/**
 * Paper-scale figures (deno bench bench/paper_bench.ts): the wall time of simulating one
 * training step of each preset of examples/paper_scale.ts -- shape-only, on 128, 512 or 2048 core
 * actors -- and the process's memory after it. One iteration each (a 2048-core step takes a
 * minute or more); the presets run smallest first, so each memory figure is that of the largest
 * simulation so far. The figures are printed when the bench process ends.
 */

import { PAPER_PRESETS } from "../src/paper/presets.ts";
import { simulatePaperStep } from "../src/paper/simulate.ts";

const GiB = 2 ** 30;
const rows = new Map<string, string>(); // by model: the last run's figures

const order = [...PAPER_PRESETS].sort((a, b) => a.experts * a.layers - b.experts * b.layers);
for (const preset of order) {
  Deno.bench(
    `paper scale: one training step of ${preset.name} on ${preset.experts} core actors`,
    { n: 1, warmup: 0, group: "paper" },
    () => {
      const r = simulatePaperStep(preset.name);
      const memory = Deno.memoryUsage();
      rows.set(
        r.model,
        `${r.model.padEnd(10)} wall ${r.wallSeconds.toFixed(1).padStart(6)} s (build ${
          r.buildSeconds.toFixed(1)
        } s, run ${r.runSeconds.toFixed(1)} s)  rss ${(memory.rss / GiB).toFixed(2)} GiB  heap ${
          (memory.heapUsed / GiB).toFixed(2)
        } GiB  simulated step ${(r.stepSeconds * 1e3).toFixed(1)} ms  ${r.messages} messages`,
      );
    },
  );
}

globalThis.addEventListener("unload", () => {
  for (const row of rows.values()) console.log(row);
});
