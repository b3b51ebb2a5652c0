/**
 * podsim: GShard-style sharded programs on a simulated TPU v3 pod. Every core is an xstate
 * actor with its own HBM budget and compute clock, driven by a deterministic discrete-event
 * runtime over a modelled ICI interconnect.
 *
 * @example
 * ```ts
 * import { runProgram, sliceTopology } from "@podsim/podsim";
 *
 * const v3_8 = sliceTopology("v3-8");
 * const result = runProgram(v3_8, function* (core) {
 *   const next = (core.id + 1) % core.coreCount;
 *   const prev = (core.id + core.coreCount - 1) % core.coreCount;
 *   yield* core.alloc(4 * 1024, "activations", "x");
 *   yield* core.send(next, new Float32Array(1024), { tag: "shift" });
 *   const msg = yield* core.recv<Float32Array>(prev, "shift");
 *   yield* core.compute({ flops: 2 * msg.payload.length, bytes: msg.bytes, label: "sum" });
 * });
 * console.log(result.status, result.simulatedSeconds);
 * ```
 *
 * @module
 */

export {
  OptionsError,
  PodsimError,
  ProgramError,
  RunLimitError,
  ShapeError,
  TopologyError,
} from "./src/errors.ts";

export { type HardwareSpec, TPU_V3 } from "./src/topology/hardware.ts";
export {
  type CoreCoord,
  createTopology,
  type Link,
  type LinkDirection,
  Topology,
  type TopologyOptions,
} from "./src/topology/topology.ts";
export {
  type MeshOptions,
  meshTopology,
  parseShape,
  ringTopology,
  type ShapeOptions,
  type SliceName,
  sliceTopology,
  torusTopology,
  TPU_V3_SLICES,
} from "./src/topology/slices.ts";

export {
  CORE_STATES,
  type CoreContext,
  type CoreStateName,
  isFinalCoreState,
  type Tag,
  type WaitTarget,
} from "./src/actors/core_machine.ts";
export {
  type BytesByCategory,
  formatBytes,
  MEMORY_CATEGORIES,
  type MemoryCategory,
  type MemoryLedger,
  OutOfMemoryError,
} from "./src/actors/memory_ledger.ts";
export {
  type ComputeRequest,
  type CoreHandle,
  type Dtype,
  type Message,
  type Operation,
  type OperationKind,
  type Program,
  type ProgramGenerator,
  type SendOptions,
} from "./src/actors/program.ts";
export { DeadlockError, type WaitEdge } from "./src/actors/deadlock.ts";
export {
  type ActorInspectionEvent,
  type CoreReport,
  expectCompleted,
  type RunLimits,
  type RunOptions,
  runProgram,
  type RunReport,
  type RunResult,
  type RunStatus,
  type UnreceivedMessages,
} from "./src/actors/runtime.ts";
export { toChromeTraceJson, type TraceEvent } from "./src/actors/trace.ts";
export {
  type ExploreCounterexample,
  type ExploreOptions,
  exploreProgram,
  type ExploreResult,
  type ExploreStep,
} from "./src/actors/explore.ts";

export {
  COLLECTIVE_ALGORITHMS,
  COLLECTIVE_KINDS,
  type CollectiveAlgorithm,
  type CollectiveDtype,
  type CollectiveKind,
  type CollectiveSpec,
  DTYPE_BYTES,
  type GroupSpec,
  type Reduction,
  REDUCTIONS,
} from "./src/collectives/spec.ts";
export { CollectivePlan, planCollective } from "./src/collectives/plan.ts";
export { CollectiveMismatchError, type Disagreement } from "./src/collectives/agreement.ts";
export { type AnalyticEstimate, analyticSeconds } from "./src/collectives/analytic.ts";
export {
  type CollectiveReport,
  type CollectiveRunOptions,
  randomInputs,
  runCollective,
} from "./src/collectives/run_collective.ts";
export { referenceOutputs } from "./src/collectives/reference.ts";

export { BYTES_PER_ELEMENT, type DType, type Shape } from "./src/ops/shape.ts";
export {
  evaluate,
  type Feeds,
  Graph,
  Node,
  type OpCost,
  type OpDef,
  type Source,
  type SourceAttrs,
} from "./src/ops/graph.ts";
export {
  add,
  broadcastTo,
  fill,
  type FillAttrs,
  mul,
  scale,
  type ScaleAttrs,
  sub,
} from "./src/ops/elementwise.ts";
export { grad } from "./src/ops/autodiff.ts";
export {
  einsum,
  type EinsumAttrs,
  type EinsumSpec,
  matmul,
  parseEinsum,
} from "./src/ops/einsum.ts";
export {
  matmulInto,
  type MatmulKernel,
  type MatmulOptions,
  withMatmulKernel,
} from "./src/ops/matmul.ts";
export { gelu, relu } from "./src/ops/activations.ts";
export {
  broadcastAxes,
  type BroadcastAxesAttrs,
  max,
  mean,
  type ReduceAttrs,
  sum,
  weightedMean,
} from "./src/ops/reductions.ts";
export { logSoftmax, softmax, type SoftmaxAttrs } from "./src/ops/softmax.ts";
export { layerNorm, type NormAttrs, rmsNorm } from "./src/ops/norms.ts";
export {
  dropout,
  type DropoutAttrs,
  dropoutKeep,
  type DropoutKey,
  dropoutMask,
  type DropoutOptions,
  type DropoutWindow,
} from "./src/ops/dropout.ts";
export {
  argmax,
  type AxisAttrs,
  cumsum,
  type CumsumAttrs,
  type CumsumOptions,
  embedding,
  type EmbeddingGradAttrs,
  oneHot,
  type OneHotAttrs,
  type OneHotOptions,
  scatterAlongAxis,
  type ScatterAttrs,
  takeAlongAxis,
  type TopK,
  topK,
  type TopKAttrs,
} from "./src/ops/indexing.ts";
export {
  concat,
  type ConcatAttrs,
  pad,
  type PadAttrs,
  reshape,
  type ReshapeAttrs,
  slice,
  type SliceAttrs,
  transpose,
  type TransposeAttrs,
} from "./src/ops/layout.ts";
export {
  crossEntropy,
  type CrossEntropyAttrs,
  type CrossEntropyLossOptions,
  type CrossEntropyOptions,
  softmaxCrossEntropy,
} from "./src/ops/loss.ts";
export {
  type AttentionOptions,
  causalMask,
  type CausalMaskOptions,
  MASKED,
  multiHeadAttention,
} from "./src/ops/attention.ts";
export {
  adafactor,
  type AdafactorOptimizer,
  type AdafactorOptions,
  adam,
  type AdamOptimizer,
  type AdamOptions,
  allocOptimizerState,
  applyOptimizer,
  freeOptimizerState,
  type LearningRateSchedule,
  type Optimizer,
  type OptimizerParam,
  type OptimizerSlot,
  type OptimizerState,
  type OptimizerStepCost,
  type ResolvedAdafactorOptions,
  type ResolvedAdamOptions,
  rsqrtSchedule,
  type RsqrtScheduleOptions,
} from "./src/ops/optimizers.ts";
export { type Annotation, meshSplit, replicate, shard, split } from "./src/ops/annotate.ts";
export { Sharding } from "./src/ops/sharding.ts";
export { type InsertedCollective, type ReshardStep } from "./src/ops/reshard.ts";
export {
  partition,
  PartitionedGraph,
  type PartitionOptions,
  type PartitionStep,
  type PermuteLoop,
  type TrainStepResult,
} from "./src/ops/partition.ts";
export { type ProgramOptions, type RematPlan } from "./src/ops/spmd_program.ts";
export {
  CapacityOverflowError,
  type ExpertLoad,
  gateCapacity,
  type GateKey,
  type GateOptions,
  type GroupRoute,
  type OverflowEvent,
  routeGroup,
  type SecondPolicy,
  type TokenRoute,
} from "./src/moe/gate.ts";
export { gate, type GateAttrs, type GateNodes, type GateObserver } from "./src/moe/gate_ops.ts";
export { type MoeLayer, moeLayer, type MoeLayerOptions, type MoeParams } from "./src/moe/layer.ts";
export { type MoeCosts, moeCosts, type MoeStatistics, RoutingRecorder } from "./src/moe/stats.ts";
export {
  buildTransformer,
  type TransformerConfig,
  type TransformerGraph,
} from "./src/moe/transformer.ts";
export {
  classifyNodes,
  STEP_CLASSES,
  stepBreakdown,
  type StepClass,
} from "./src/moe/step_breakdown.ts";
export {
  PAPER_ARCHITECTURE,
  PAPER_PRESETS,
  type PaperConfig,
  paperConfig,
  type PaperOverrides,
  type PaperPreset,
} from "./src/paper/presets.ts";
export {
  checkPaperConfig,
  PAPER_MEMORY_CATEGORIES,
  type PaperStepOptions,
  type PaperStepReport,
  REMAT_POLICIES,
  type RematPolicy,
  simulateConfig,
  simulatePaperStep,
} from "./src/paper/simulate.ts";
