/**
 * Hardware presets: the numbers that time compute, memory and links. A preset is plain data,
 * so a user can copy one and change a field (`{ ...TPU_V3, iciLinkBandwidth: 100e9 }`).
 *
 * @module
 */

/** The figures of one accelerator generation that the simulator needs. */
export interface HardwareSpec {
  /** Human-readable name, used in reports. */
  readonly name: string;
  /** TensorCores per chip. Each core is its own device with its own HBM. */
  readonly coresPerChip: number;
  /** Peak bf16 FLOP/s of one core. */
  readonly peakFlopsPerCore: number;
  /**
   * Fraction of {@linkcode HardwareSpec.peakFlopsPerCore} that f32 matmuls reach. The MXU
   * multiplies bf16; XLA's default precision runs an f32 matmul as one bf16 pass (1), higher
   * precisions as 3 or 6 passes (1/3, 1/6). Used when an op says its dtype is f32.
   */
  readonly f32FlopsFraction: number;
  /** HBM capacity of one core in bytes: the memory ledger's budget. */
  readonly hbmBytesPerCore: number;
  /** HBM bandwidth of one core in bytes/s. */
  readonly hbmBandwidthPerCore: number;
  /**
   * Fraction of peak FLOP/s an op reaches by default (1 = the roofline). Ops may pass their own.
   */
  readonly computeEfficiency: number;
  /** Fraction of HBM bandwidth an op reaches by default (1 = the roofline). */
  readonly hbmEfficiency: number;
  /** Bandwidth of one ICI link in one direction, bytes/s. Links are full duplex. */
  readonly iciLinkBandwidth: number;
  /** Latency of one ICI hop, seconds. */
  readonly iciLinkLatency: number;
  /** Bandwidth of the on-chip path between two cores of one chip, bytes/s, per direction. */
  readonly onChipBandwidth: number;
  /** Latency of the on-chip path between two cores of one chip, seconds. */
  readonly onChipLatency: number;
  /** Where each figure comes from (field name -> source and choice made). */
  readonly sources: Readonly<Record<string, string>>;
}

/** One GiB, 2^30 bytes. */
const GiB = 2 ** 30;

/**
 * The TPU v3 preset (see shared/reference/tpu_v3.md). Where public sources disagree, the
 * value chosen and the alternative are named in `sources`.
 *
 * @example
 * ```ts
 * import { TPU_V3 } from "@podsim/podsim";
 * console.log(TPU_V3.peakFlopsPerCore); // 61.5e12
 * const fasterLinks = { ...TPU_V3, iciLinkBandwidth: 100e9 };
 * console.log(fasterLinks.iciLinkBandwidth); // 100e9
 * ```
 */
export const TPU_V3: HardwareSpec = Object.freeze({
  name: "TPU v3",
  coresPerChip: 2,
  peakFlopsPerCore: 61.5e12,
  f32FlopsFraction: 1,
  hbmBytesPerCore: 16 * GiB,
  hbmBandwidthPerCore: 450e9,
  computeEfficiency: 1,
  hbmEfficiency: 1,
  iciLinkBandwidth: 82e9,
  iciLinkLatency: 1e-6,
  onChipBandwidth: 450e9,
  onChipLatency: 0.5e-6,
  sources: Object.freeze({
    coresPerChip: "Google Cloud TPU v3 docs: 2 TensorCores per chip, each with its own HBM.",
    peakFlopsPerCore:
      "Cloud docs: 123 TFLOP/s bf16 per chip = 61.5 per core (2 MXU x 128^2 MAC x 2 x 0.94 GHz).",
    f32FlopsFraction:
      "XLA on TPU runs f32 matmuls at DEFAULT precision as one bf16 pass (1); set 1/3 or 1/6 " +
      "to model HIGH (bf16_3x) or HIGHEST (bf16_6x) precision.",
    hbmBytesPerCore: "Cloud docs: 32 GiB HBM per chip, 16 GiB per core.",
    hbmBandwidthPerCore: "Cloud docs: 900 GB/s per chip, ~450 GB/s per core (derived).",
    computeEfficiency: "1 = roofline; lower it to model measured MXU utilisation.",
    hbmEfficiency: "1 = roofline; lower it to model measured HBM utilisation.",
    iciLinkBandwidth:
      "82 GB/s per direction (Jouppi et al., CACM 2020; 340 TB/s pod all-reduce / 4096 links). " +
      "A public scaling guide says 100 GB/s: override the field to use it.",
    iciLinkLatency: "~1 us per hop (public scaling guide; ASTRA-sim's TPU model uses 1 us).",
    onChipBandwidth:
      "Modelling choice: the two cores of a chip share no memory and do not use ICI to talk; " +
      "the on-chip path is an HBM-speed copy (450 GB/s per direction).",
    onChipLatency: "Modelling choice: half an ICI hop (0.5 us); no public figure.",
  }),
});

/** Checks that every figure of a spec is usable, naming the first bad field. */
export function validateHardware(spec: HardwareSpec): string | undefined {
  const positive: (keyof HardwareSpec)[] = [
    "peakFlopsPerCore",
    "f32FlopsFraction",
    "hbmBytesPerCore",
    "hbmBandwidthPerCore",
    "computeEfficiency",
    "hbmEfficiency",
    "iciLinkBandwidth",
    "onChipBandwidth",
  ];
  for (const key of positive) {
    const v = spec[key] as number;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      return `hardware ${key} must be a positive finite number, got ${v}`;
    }
  }
  for (const key of ["iciLinkLatency", "onChipLatency"] as const) {
    const v = spec[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      return `hardware ${key} must be a finite number >= 0, got ${v}`;
    }
  }
  for (const key of ["computeEfficiency", "hbmEfficiency", "f32FlopsFraction"] as const) {
    if (spec[key] > 1) {
      return `hardware ${key} is a fraction of peak and must be <= 1, got ${spec[key]}`;
    }
  }
  if (!Number.isInteger(spec.coresPerChip) || spec.coresPerChip < 1) {
    return `hardware coresPerChip must be a positive integer, got ${spec.coresPerChip}`;
  }
  return undefined;
}
