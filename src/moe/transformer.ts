/**
 * GShard's MoE Transformer for translation, as a graph: a pre-norm encoder-decoder (RMS norms,
 * multi-head attention, cross-attention in the decoder, ReLU FFNs) with every other FFN replaced
 * by the MoE layer, in encoder and decoder. The same graph runs numerically on a few cores or in
 * shape-only mode; the batch is split over the cores and the experts over the cores.
 *
 * @module
 */

import { OptionsError } from "../errors.ts";
import { relu } from "../ops/activations.ts";
import { split } from "../ops/annotate.ts";
import { grad } from "../ops/autodiff.ts";
import { multiHeadAttention } from "../ops/attention.ts";
import { add, scale } from "../ops/elementwise.ts";
import { einsum } from "../ops/einsum.ts";
import type { Graph, Node } from "../ops/graph.ts";
import { embedding } from "../ops/indexing.ts";
import { reshape } from "../ops/layout.ts";
import { crossEntropy } from "../ops/loss.ts";
import { rmsNorm } from "../ops/norms.ts";
import type { GateOptions } from "./gate.ts";
import type { GateObserver } from "./gate_ops.ts";
import { moeLayer } from "./layer.ts";

/** Sizes and switches of the model. */
export interface TransformerConfig {
  /** Sentences per batch (split over the cores). */
  readonly batch: number;
  /** Source positions (with the language tag and EOS). */
  readonly sourceLength: number;
  /** Target positions (BOS + target, or target + EOS). */
  readonly targetLength: number;
  /** Source vocabulary size. */
  readonly sourceVocabulary: number;
  /** Target vocabulary size. */
  readonly targetVocabulary: number;
  /** Model width M. */
  readonly dModel: number;
  /** Attention heads. */
  readonly heads: number;
  /**
   * Width of each head; the attention's inner width is heads x headDim (GShard: 16 x 128 =
   * 2048 with dModel 1024). Default dModel / heads (dModel must then divide by heads).
   */
  readonly headDim?: number;
  /** FFN hidden width H (dense and expert). */
  readonly hidden: number;
  /** Encoder and decoder layers each. */
  readonly layers: number;
  /** Experts per MoE layer (0: every FFN dense). */
  readonly experts: number;
  /**
   * Tokens per MoE group S: the batch's tokens [B, T] are regrouped into G = B * T / S groups
   * that are gated independently (GShard section 3). Default T: each sentence is a group.
   */
  readonly groupSize?: number;
  /**
   * Hidden width of the dense FFNs that take the MoE layers' places when `experts` is 0 (the
   * `--dense` baseline at equal per-token compute: 2H for top-2 routing). Default `hidden`.
   */
  readonly denseHidden?: number;
  /** Cores the batch and experts are split over (omit for a single-core graph). */
  readonly cores?: number;
  /** Weight of the aux loss in the total loss. Default 0.01. */
  readonly auxWeight?: number;
  /** Label smoothing. Default 0.1. */
  readonly labelSmoothing?: number;
  /** Gate options (its key gets the layer index). */
  readonly gate?: GateOptions;
  /** Routing observer of every MoE layer. */
  readonly observer?: GateObserver;
}

/** The model's graph: inputs, parameters and outputs. */
export interface TransformerGraph {
  /** The graph the model was built on. */
  readonly graph: Graph;
  /** Inputs fed per step: ids and masks. */
  readonly inputs: Readonly<
    Record<
      | "source"
      | "targetIn"
      | "targetOut"
      | "targetMask"
      | "encoderMask"
      | "decoderMask"
      | "crossMask",
      Node
    >
  >;
  /** Parameters, by name. */
  readonly params: readonly Node[];
  /** Logits [B, Lt, Vt]. */
  readonly logits: Node;
  /** Cross-entropy (label-smoothed, over target tokens). */
  readonly nll: Node;
  /** Sum of the MoE layers' aux losses (0 if dense). */
  readonly aux: Node | undefined;
  /** nll + auxWeight * aux. */
  readonly loss: Node;
  /** Gradients of the loss, one per parameter. */
  readonly grads?: readonly Node[];
  /** The MoE layers' nodes by phase, for timing. */
  readonly phases: Readonly<Record<string, Node[]>>;
  /**
   * The residual stream after every block (and the encoder's output): what rematerialisation
   * keeps so that a layer's activations can be recomputed from its input.
   */
  readonly checkpoints: readonly Node[];
}

/** Builds the model on `graph`; with `withGrads`, its gradients too. */
export function buildTransformer(
  graph: Graph,
  config: TransformerConfig,
  withGrads = true,
): TransformerGraph {
  const { batch: B, sourceLength: Ls, targetLength: Lt, dModel: M, heads, hidden: H, layers } =
    config;
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new OptionsError(`transformer: ${what}`);
  };
  for (
    const [name, v] of Object.entries({
      batch: B,
      sourceLength: Ls,
      targetLength: Lt,
      dModel: M,
      heads,
      hidden: H,
      layers,
    })
  ) {
    check(Number.isInteger(v) && v >= 1, `${name} must be a positive integer, got ${v}`);
  }
  const dh = config.headDim ?? M / heads;
  if (config.headDim === undefined) {
    check(M % heads === 0, `dModel ${M} does not divide into ${heads} heads`);
  }
  check(Number.isInteger(dh) && dh >= 1, `headDim must be a positive integer, got ${dh}`);
  const inner = heads * dh;
  check(
    Number.isInteger(config.experts) && config.experts >= 0,
    `experts must be an integer >= 0, got ${config.experts}`,
  );
  const cores = config.cores;
  const groupSize = config.groupSize;
  if (groupSize !== undefined && config.experts > 0) {
    check(
      Number.isInteger(groupSize) && groupSize >= 1,
      `groupSize must be a positive integer, got ${groupSize}`,
    );
    for (const [side, T] of [["source", Ls], ["target", Lt]] as const) {
      check(
        (B * T) % groupSize === 0,
        `a batch of ${B} x ${T} ${side} tokens does not divide into groups of ${groupSize}`,
      );
      const G = (B * T) / groupSize;
      if (cores !== undefined) {
        check(
          G % cores === 0 && (B / cores) * T % groupSize === 0,
          `${G} groups of ${groupSize} ${side} tokens do not divide over ${cores} cores ` +
            `(each core's ${(B / cores) * T} tokens must be whole groups)`,
        );
      }
    }
  }
  if (cores !== undefined) {
    check(B % cores === 0, `a batch of ${B} sentences does not divide over ${cores} cores`);
    if (config.experts > 0) {
      check(
        config.experts % cores === 0,
        `${config.experts} experts do not divide over ${cores} cores (a mesh too small or too large for the experts)`,
      );
    }
  }
  const params: Node[] = [];
  const param = (name: string, shape: number[]) => {
    const p = graph.param(name, shape);
    params.push(p);
    return p;
  };
  const batchInput = (name: string, shape: number[]) => {
    const x = graph.input(name, shape);
    return cores === undefined ? x : split(x, 0, cores);
  };
  const inputs = {
    source: batchInput("source", [B, Ls]),
    targetIn: batchInput("target_in", [B, Lt]),
    targetOut: batchInput("target_out", [B, Lt]),
    targetMask: batchInput("target_mask", [B, Lt]),
    encoderMask: batchInput("encoder_mask", [B, Ls, Ls]),
    decoderMask: batchInput("decoder_mask", [B, Lt, Lt]),
    crossMask: batchInput("cross_mask", [B, Lt, Ls]),
  };
  const attention = (prefix: string, q: Node, kv: Node, mask: Node, Tq: number, Tk: number) => {
    const proj = (name: string, x: Node, T: number) =>
      reshape(einsum("btm,mn->btn", x, param(`${prefix}_${name}`, [M, inner])), [B, T, heads, dh]);
    const out = multiHeadAttention({
      q: proj("q", q, Tq),
      k: proj("k", kv, Tk),
      v: proj("v", kv, Tk),
      mask,
    });
    return einsum("btn,nm->btm", reshape(out, [B, Tq, inner]), param(`${prefix}_o`, [inner, M]));
  };
  const auxes: Node[] = [];
  const phases: Record<string, Node[]> = { gate: [], dispatch: [], "expert FFN": [], combine: [] };
  let moeIndex = 0;
  const ffn = (prefix: string, x: Node, T: number, moe: boolean, slot: boolean) => {
    if (!moe) {
      // A dense FFN in an MoE layer's place may be wider (equal per-token compute).
      const width = slot ? config.denseHidden ?? H : H;
      const h = relu(einsum("btm,mh->bth", x, param(`${prefix}_wi`, [M, width])));
      return einsum("bth,hm->btm", h, param(`${prefix}_wo`, [width, M]));
    }
    // Groups of S tokens (by default each sentence is a group of T tokens).
    const E = config.experts;
    const S = groupSize ?? T;
    const layer = moeLayer(
      reshape(x, [(B * T) / S, S, M]),
      {
        wg: param(`${prefix}_wg`, [M, E]),
        wi: param(`${prefix}_wi`, [E, M, H]),
        wo: param(`${prefix}_wo`, [E, H, M]),
      },
      {
        cores,
        observer: config.observer,
        gate: {
          ...config.gate,
          key: {
            seed: config.gate?.key?.seed ?? 1,
            step: config.gate?.key?.step,
            layer: moeIndex++,
          },
        },
      },
    );
    auxes.push(layer.auxLoss);
    for (const [phase, nodes] of Object.entries(layer.phases)) phases[phase].push(...nodes);
    return S === T ? layer.output : reshape(layer.output, [B, T, M]);
  };
  const embed = (ids: Node, table: Node, T: number, pos: string) =>
    add(scale(embedding(table, ids), Math.sqrt(M)), param(pos, [T, M]));
  const sourceTable = param("source_embedding", [config.sourceVocabulary, M]);
  const targetTable = param("target_embedding", [config.targetVocabulary, M]);
  const checkpoints: Node[] = [];
  const residual = (x: Node, block: Node) => {
    const sum = add(x, block);
    checkpoints.push(sum);
    return sum;
  };
  // Encoder.
  let x = embed(inputs.source, sourceTable, Ls, "source_positions");
  checkpoints.push(x);
  for (let l = 0; l < layers; l++) {
    const h = rmsNorm(x, param(`enc${l}_norm1`, [M]));
    x = residual(x, attention(`enc${l}_self`, h, h, inputs.encoderMask, Ls, Ls));
    const moe = config.experts > 0 && l % 2 === 1;
    x = residual(
      x,
      ffn(`enc${l}_ffn`, rmsNorm(x, param(`enc${l}_norm2`, [M])), Ls, moe, l % 2 === 1),
    );
  }
  const memory = rmsNorm(x, param("enc_final_norm", [M]));
  checkpoints.push(memory);
  // Decoder.
  let y = embed(inputs.targetIn, targetTable, Lt, "target_positions");
  checkpoints.push(y);
  for (let l = 0; l < layers; l++) {
    const h = rmsNorm(y, param(`dec${l}_norm1`, [M]));
    y = residual(y, attention(`dec${l}_self`, h, h, inputs.decoderMask, Lt, Lt));
    y = residual(
      y,
      attention(
        `dec${l}_cross`,
        rmsNorm(y, param(`dec${l}_norm2`, [M])),
        memory,
        inputs.crossMask,
        Lt,
        Ls,
      ),
    );
    const moe = config.experts > 0 && l % 2 === 1;
    y = residual(
      y,
      ffn(`dec${l}_ffn`, rmsNorm(y, param(`dec${l}_norm3`, [M])), Lt, moe, l % 2 === 1),
    );
  }
  const logits = einsum("btm,vm->btv", rmsNorm(y, param("dec_final_norm", [M])), targetTable);
  const nll = crossEntropy(logits, inputs.targetOut, {
    weights: inputs.targetMask,
    labelSmoothing: config.labelSmoothing ?? 0.1,
  });
  const aux = auxes.length === 0 ? undefined : auxes.reduce((a, b) => add(a, b));
  const loss = aux === undefined ? nll : add(nll, scale(aux, config.auxWeight ?? 0.01));
  const grads = withGrads ? grad(loss, params) : undefined;
  return { graph, inputs, params, logits, nll, aux, loss, grads, phases, checkpoints };
}
