/**
 * GShard's model family at paper scale, in shape-only mode: one training step of a preset
 * (MoE(128E, 12L) ... MoE(2048E, 60L)) on as many core actors as the paper used, through the
 * same model, MoE layer, partitioner and collectives as examples/moe_nmt.ts. Prints the step
 * time and where it goes, the roofline step time, the per-core memory ledger against 16 GiB,
 * and what training on 1T tokens would take.
 *
 *   deno run examples/paper_scale.ts --model 2048E-36L [--json]
 *   deno run examples/paper_scale.ts --all [--json]
 *     [--remat auto|none|full] [--seq-length L] [--group-size S] [--capacity C]
 *
 * Exits 0 on success, 1 when a step runs out of memory (with `--remat none`), 2 on bad input.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { PodsimError } from "../mod.ts";
import { formatBytes } from "../src/actors/memory_ledger.ts";
import { STEP_CLASSES } from "../src/moe/step_breakdown.ts";
import { PAPER_PRESETS, paperConfig, type PaperOverrides } from "../src/paper/presets.ts";
import {
  checkPaperConfig,
  PAPER_MEMORY_CATEGORIES,
  type PaperStepReport,
  REMAT_POLICIES,
  type RematPolicy,
  simulatePaperStep,
} from "../src/paper/simulate.ts";
import { number, oneOf, usage, UsageError } from "./_cli.ts";

const HELP = `Simulates one training step of GShard's MoE Transformers at paper scale, shape-only.

  deno run examples/paper_scale.ts --model NAME [options]
  deno run examples/paper_scale.ts --all [options]

  --model NAME        one of ${PAPER_PRESETS.map((p) => p.name).join(", ")}
  --all               every preset, side by side
  --remat POLICY      auto (default: recompute only when activations do not fit), none, full
  --seq-length L      positions per sentence, source and target (default 256)
  --group-size S      tokens per MoE group (default 1024)
  --capacity C        expert capacity per group (default ceil(2S / E), the paper's 2S/E)
  --json              one JSON object per model (one line each)
  --help              this text

Architecture (every preset): M = 1024, H = 8192, 16 heads x 128, vocabularies 64k / 32k, MoE in
every other FFN with one expert per core, f32 weights and activations, Adafactor.`;

/** Parsed command line. */
export interface PaperArgs {
  readonly models: readonly string[];
  readonly remat: RematPolicy;
  readonly overrides: PaperOverrides;
  readonly json: boolean;
  readonly help: boolean;
}

/** Parses and checks the flags (and the model names) before anything runs. */
export function parsePaperArgs(args: readonly string[]): PaperArgs {
  const { values } = parseArgs({
    args: [...args],
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string" },
      all: { type: "boolean", default: false },
      remat: { type: "string", default: "auto" },
      "seq-length": { type: "string" },
      "group-size": { type: "string" },
      capacity: { type: "string" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const help = values.help;
  if (!help && values.all === (values.model !== undefined)) {
    throw new UsageError("give --model NAME or --all (one of them)");
  }
  const overrides: PaperOverrides = {
    ...(values["seq-length"] !== undefined
      ? { sequenceLength: number("--seq-length", values["seq-length"], { min: 1, integer: true }) }
      : {}),
    ...(values["group-size"] !== undefined
      ? { groupSize: number("--group-size", values["group-size"], { min: 1, integer: true }) }
      : {}),
    ...(values.capacity !== undefined
      ? { capacity: number("--capacity", values.capacity, { min: 1, integer: true }) }
      : {}),
  };
  const models = values.all ? PAPER_PRESETS.map((p) => p.name) : [values.model ?? ""];
  // Every model's configuration is checked, and its graph built, before the first one runs.
  if (!help) { for (const m of models) checkPaperConfig(paperConfig(m, overrides)); }
  return {
    models,
    remat: oneOf("--remat", values.remat, REMAT_POLICIES),
    overrides,
    json: values.json,
    help,
  };
}

const ms = (s: number) => `${(s * 1e3).toFixed(1)} ms`;
const GiB = 2 ** 30;

/** The human-readable table: one column per model. */
export function formatTable(reports: readonly PaperStepReport[]): string[] {
  const rows: [string, (r: PaperStepReport) => string][] = [
    ["cores", (r) => `${r.cores} (${r.slice})`],
    [
      "parameters (paper)",
      (r) => `${(r.parameters / 1e9).toFixed(1)}B (${r.config.paperParameters})`,
    ],
    [
      "batch tokens / groups / C",
      (r) => `${r.config.batchTokens / 2 ** 20}M / ${r.config.groups} / ${r.config.capacity}`,
    ],
    ["status (remat)", (r) => `${r.status} (${r.remat})`],
    ["step time", (r) => ms(r.stepSeconds)],
    [
      "roofline step / ratio",
      (r) => `${ms(r.rooflineStepSeconds)} / ${r.rooflineRatio.toFixed(2)}`,
    ],
    ...STEP_CLASSES.map((c) =>
      [
        `  ${c}`,
        (r: PaperStepReport) =>
          `${ms(r.breakdownSeconds[c])} ${
            (100 * r.breakdownSeconds[c] / r.stepSeconds).toFixed(0)
          }%`,
      ] as [string, (r: PaperStepReport) => string]
    ),
    [
      "peak memory / core",
      (r) => `${(r.peakMemoryBytesPerCore / GiB).toFixed(2)} of ${r.budgetBytesPerCore / GiB} GiB`,
    ],
    ...PAPER_MEMORY_CATEGORIES.map((c) =>
      [`  ${c}`, (r: PaperStepReport) => formatBytes(r.memoryBytesPerCore[c])] as [
        string,
        (r: PaperStepReport) => string,
      ]
    ),
    ["days for 1T tokens", (r) => r.daysFor1TTokens.toFixed(1)],
    ["core-years for 1T tokens", (r) => r.coreYearsFor1TTokens.toFixed(1)],
    ["messages / bytes moved", (r) => `${r.messages} / ${formatBytes(r.bytesMoved)}`],
    ["wall time of the simulation", (r) => `${r.wallSeconds.toFixed(1)} s`],
  ];
  const cells = rows.map(([label, f]) => [label, ...reports.map(f)]);
  const widths = reports.map((_, i) => Math.max(...cells.map((row) => row[i + 1].length)));
  const labelWidth = Math.max(...cells.map((row) => row[0].length), "model".length);
  const line = (row: string[]) =>
    [row[0].padEnd(labelWidth), ...row.slice(1).map((c, i) => c.padStart(widths[i]))].join("  ");
  return [line(["model", ...reports.map((r) => r.model)]), ...cells.map(line)];
}

/** Runs the command line; returns the exit code. */
export function main(
  args: readonly string[],
  print: (line: string) => void = console.log,
  fail: (line: string) => void = console.error,
  progress: (line: string) => void = console.error,
): number {
  let parsed: PaperArgs;
  try {
    parsed = parsePaperArgs(args);
  } catch (e) {
    return usage(e, fail);
  }
  if (parsed.help) {
    print(HELP);
    return 0;
  }
  const reports: PaperStepReport[] = [];
  for (const model of parsed.models) {
    // A 2048-core step takes minutes of wall time: say what is running.
    if (!parsed.json) progress(`${model}: simulating one training step ...`);
    let report: PaperStepReport;
    try {
      report = simulatePaperStep(model, { ...parsed.overrides, remat: parsed.remat });
    } catch (e) {
      if (!(e instanceof PodsimError)) throw e;
      fail(`${model}: the run failed: ${e.message}`);
      return 1;
    }
    if (!parsed.json) progress(`${model}: done in ${report.wallSeconds.toFixed(1)} s`);
    reports.push(report);
    if (parsed.json) {
      const { config, ...rest } = report;
      print(JSON.stringify({ ...rest, config: { ...config } }));
    }
    if (report.status !== "completed") fail(`${model}: ${report.error}`);
  }
  if (!parsed.json) { for (const line of formatTable(reports)) print(line); }
  return reports.every((r) => r.status === "completed") ? 0 : 1;
}

if (import.meta.main) Deno.exit(main(Deno.args));
