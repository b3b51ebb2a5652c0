/**
 * GShard's model family (the paper's table of MoE Transformers, 12.5B to 1T parameters) as
 * presets, and their resolved configuration: architecture from the paper, one expert per MoE
 * layer per core, and the parameters the paper leaves open (sequence length, group size,
 * capacity) with documented defaults.
 *
 * @module
 */

import { OptionsError } from "../errors.ts";
import type { SliceName } from "../topology/slices.ts";

/** One model of the paper's family. */
export interface PaperPreset {
  /** Name, e.g. "2048E-36L". */
  readonly name: string;
  /** Experts per MoE layer (= cores). */
  readonly experts: number;
  /** Layers, encoder and decoder together ("36L" = 18 + 18). */
  readonly layers: number;
  /** Tokens per training step (source tokens). */
  readonly batchTokens: number;
  /** The paper's parameter count, for comparison with the built model. */
  readonly paperParameters: string;
}

const M = 2 ** 20;

/**
 * The presets: MoE(128E, 12L) ... MoE(2048E, 60L), each on as many cores as experts per layer
 * (v3-128, v3-512, v3-2048), batches of 1M tokens (128 and 512 cores) or 4M (2048).
 *
 * @example
 * ```ts
 * import { PAPER_PRESETS } from "./presets.ts";
 * console.log(PAPER_PRESETS.map((p) => p.name).join(" ")); // 128E-12L 128E-36L 512E-12L ...
 * ```
 */
export const PAPER_PRESETS: readonly PaperPreset[] = Object.freeze([
  { name: "128E-12L", experts: 128, layers: 12, batchTokens: M, paperParameters: "12.5B" },
  { name: "128E-36L", experts: 128, layers: 36, batchTokens: M, paperParameters: "37B" },
  { name: "512E-12L", experts: 512, layers: 12, batchTokens: M, paperParameters: "50B" },
  { name: "512E-36L", experts: 512, layers: 36, batchTokens: M, paperParameters: "150B" },
  { name: "2048E-12L", experts: 2048, layers: 12, batchTokens: 4 * M, paperParameters: "200B" },
  { name: "2048E-36L", experts: 2048, layers: 36, batchTokens: 4 * M, paperParameters: "600B" },
  { name: "2048E-60L", experts: 2048, layers: 60, batchTokens: 4 * M, paperParameters: "1T" },
]);

/**
 * The architecture every preset shares (GShard section 1 of the reference notes).
 *
 * @example
 * ```ts
 * import { PAPER_ARCHITECTURE } from "./presets.ts";
 * console.log(PAPER_ARCHITECTURE.heads * PAPER_ARCHITECTURE.headDim); // 2048
 * ```
 */
export const PAPER_ARCHITECTURE: Readonly<{
  dModel: number;
  hidden: number;
  heads: number;
  headDim: number;
  sourceVocabulary: number;
  targetVocabulary: number;
}> = Object.freeze({
  dModel: 1024,
  hidden: 8192,
  heads: 16,
  headDim: 128,
  sourceVocabulary: 64_000,
  targetVocabulary: 32_000,
});

/** The parameters the paper leaves open; every field has a default. */
export interface PaperOverrides {
  /**
   * Source and target positions per sentence. Default 256: the paper does not say; sentence-
   * level translation with subword vocabularies rarely needs more. Attention's share of the
   * step and its activations grow with it.
   */
  readonly sequenceLength?: number;
  /**
   * Tokens per MoE group S. Default 1024: the reference implementation's 512-expert model used
   * G = 1024 groups for its 1M-token batch.
   */
  readonly groupSize?: number;
  /**
   * Expert capacity per group C. Default ceil(2S / E), the paper's C = 2S/E (16, 4 and 1 for
   * 128, 512 and 2048 experts with S = 1024; the reference's 512-expert model used C = 4).
   */
  readonly capacity?: number;
  /** Tokens per step. Default the preset's. */
  readonly batchTokens?: number;
}

/** A preset with every open parameter resolved and checked. */
export interface PaperConfig extends PaperPreset {
  /** The slice it runs on. */
  readonly slice: SliceName;
  /** Cores (= experts). */
  readonly cores: number;
  /** Positions per sentence (source and target). */
  readonly sequenceLength: number;
  /** Sentences per step. */
  readonly sentences: number;
  /** Tokens per MoE group. */
  readonly groupSize: number;
  /** MoE groups per step (per side: encoder and decoder each route this many). */
  readonly groups: number;
  /** Expert capacity per group. */
  readonly capacity: number;
  /** Model width M (1024). */
  readonly dModel: number;
  /** FFN and expert hidden width H (8192). */
  readonly hidden: number;
  /** Attention heads (16). */
  readonly heads: number;
  /** Width of each head (128). */
  readonly headDim: number;
  /** Source vocabulary (64k). */
  readonly sourceVocabulary: number;
  /** Target vocabulary (32k). */
  readonly targetVocabulary: number;
}

const positiveInteger = (name: string, value: unknown): number => {
  if (!(typeof value === "number" && Number.isInteger(value) && value >= 1)) {
    throw new OptionsError(`paper scale: ${name} must be a positive integer, got ${value}`);
  }
  return value;
};

/**
 * The preset `name` with the open parameters resolved. Throws an OptionsError, before anything
 * is built, for an unknown name (listing the presets), a batch that does not split into whole
 * sentences per core and whole groups per core, or a capacity below one token.
 *
 * @example
 * ```ts
 * import { paperConfig } from "./presets.ts";
 * const c = paperConfig("512E-12L");
 * console.log(c.slice, c.groups, c.capacity); // v3-512 1024 4
 * ```
 */
export function paperConfig(name: string, overrides: PaperOverrides = {}): PaperConfig {
  const preset = PAPER_PRESETS.find((p) => p.name === name);
  if (preset === undefined) {
    throw new OptionsError(
      `paper scale: unknown model ${JSON.stringify(name)}; the presets are ${
        PAPER_PRESETS.map((p) => p.name).join(", ")
      }`,
    );
  }
  const cores = preset.experts;
  const batchTokens = positiveInteger("batchTokens", overrides.batchTokens ?? preset.batchTokens);
  const L = positiveInteger("sequenceLength", overrides.sequenceLength ?? 256);
  const S = positiveInteger("groupSize", overrides.groupSize ?? 1024);
  const where =
    `${name} (${batchTokens} tokens, sequences of ${L}, groups of ${S}, ${cores} cores)`;
  if (batchTokens % L !== 0) {
    throw new OptionsError(
      `paper scale: ${where}: the batch does not split into whole sequences of ${L} tokens`,
    );
  }
  const sentences = batchTokens / L;
  if (sentences % cores !== 0) {
    throw new OptionsError(
      `paper scale: ${where}: ${sentences} sentences do not divide over ${cores} cores`,
    );
  }
  const perCore = batchTokens / cores;
  if (perCore % S !== 0) {
    throw new OptionsError(
      `paper scale: ${where}: each core's ${perCore} tokens do not divide into groups of ${S} ` +
        `(the batch must split into groups, a whole number on every core)`,
    );
  }
  const capacity = overrides.capacity ?? Math.ceil((2 * S) / preset.experts);
  if (!(Number.isInteger(capacity) && capacity >= 1)) {
    throw new OptionsError(
      `paper scale: ${where}: capacity must be an integer of at least 1 token per expert and ` +
        `group, got ${capacity}`,
    );
  }
  return {
    ...preset,
    ...PAPER_ARCHITECTURE,
    slice: `v3-${cores}` as SliceName,
    cores,
    batchTokens,
    sequenceLength: L,
    sentences,
    groupSize: S,
    groups: batchTokens / S,
    capacity,
  };
}
