// Random weights, token ids and masks for a small buildTransformer model (test helper).
import type { TransformerConfig, TransformerGraph } from "../mod.ts";

/**
 * Weights (norm scales 1, others uniform in +-0.3), token ids in range, a target mask keeping the
 * first `kept` positions of every sentence, open encoder and cross masks and a causal decoder
 * mask, from a seeded generator.
 */
export function transformerFeeds(
  model: TransformerGraph,
  config: TransformerConfig,
  { seed = 5, kept = 4 }: { seed?: number; kept?: number } = {},
): Record<string, Float32Array> {
  let state = seed;
  const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const { batch: B, sourceLength: Ls, targetLength: Lt } = config;
  const feeds: Record<string, Float32Array> = {};
  for (const p of model.params) {
    feeds[p.name] = Float32Array.from(
      { length: p.size },
      () => (p.name.includes("norm") ? 1 : (next() * 2 - 1) * 0.3),
    );
  }
  const ids = (n: number, v: number) =>
    Float32Array.from({ length: n }, () => 1 + Math.floor(next() * (v - 1)));
  feeds.source = ids(B * Ls, config.sourceVocabulary);
  feeds.target_in = ids(B * Lt, config.targetVocabulary);
  feeds.target_out = ids(B * Lt, config.targetVocabulary);
  feeds.target_mask = Float32Array.from({ length: B * Lt }, (_, i) => (i % Lt < kept ? 1 : 0));
  feeds.encoder_mask = new Float32Array(B * Ls * Ls);
  feeds.decoder_mask = Float32Array.from(
    { length: B * Lt * Lt },
    (_, i) => ((i % Lt) <= Math.floor(i / Lt) % Lt ? 0 : -1e9),
  );
  feeds.cross_mask = new Float32Array(B * Lt * Ls);
  return feeds;
}
