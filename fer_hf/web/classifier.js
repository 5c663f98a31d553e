// The model's own crop and classifier: the pixels Python's crop_face and FerImageProcessor give, classified
// by the model repo's onnx/model_quantized.onnx in onnxruntime-web.

import { roundHalfEven } from "./detector.js";

// Pillow's fixed-point resampling of 8-bit images (libImaging/Resample.c), so that a crop resized here
// has the very pixels Pillow's BILINEAR resize gives in Python.
const PRECISION_BITS = 32 - 8 - 2;

// A face's square keeps its size for many frames: its coefficients are worked out once per size.
const coefficientCache = new Map();

function bilinearCoefficients(inSize, outSize) {
  const key = `${inSize}x${outSize}`;
  let found = coefficientCache.get(key);
  if (!found) {
    if (coefficientCache.size > 512) coefficientCache.clear();
    found = computeCoefficients(inSize, outSize);
    coefficientCache.set(key, found);
  }
  return found;
}

function computeCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;  // the bilinear filter's support is 1
  const bounds = [], weights = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    const k = [];
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const w = Math.max(0, 1 - Math.abs((x + xmin - center + 0.5) / filterScale));
      k.push(w);
      total += w;
    }
    weights.push(k.map((w) => Math.trunc(0.5 + (total ? w / total : w) * (1 << PRECISION_BITS))));
    bounds.push(xmin);
  }
  return { bounds, weights };
}

function clip8(value) {
  return Math.min(255, Math.max(0, Math.floor(value / (1 << PRECISION_BITS))));
}

/** Pillow's resize((outW, outH), BILINEAR) of an 8-bit grey image: horizontal pass, then vertical. */
export function resizeGrey(pixels, width, height, outW, outH) {
  if (width === outW && height === outH) return pixels;
  const horizontal = bilinearCoefficients(width, outW), vertical = bilinearCoefficients(height, outH);
  const temp = new Uint8Array(outW * height);
  for (let y = 0; y < height; y++) {
    for (let xx = 0; xx < outW; xx++) {
      const xmin = horizontal.bounds[xx], k = horizontal.weights[xx];
      let sum = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < k.length; x++) sum += pixels[y * width + xmin + x] * k[x];
      temp[y * outW + xx] = clip8(sum);
    }
  }
  const out = new Uint8Array(outW * outH);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vertical.bounds[yy], k = vertical.weights[yy];
    for (let x = 0; x < outW; x++) {
      let sum = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < k.length; y++) sum += temp[(ymin + y) * outW + x] * k[y];
      out[yy * outW + x] = clip8(sum);
    }
  }
  return out;
}

/** Pillow's "L" conversion of RGBA pixels (ITU-R 601-2 luma in its fixed point). */
export function toGrey(rgba, width, height) {
  const grey = new Uint8Array(width * height);
  for (let i = 0; i < grey.length; i++) {
    grey[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >> 16;
  }
  return grey;
}

/** A region reader of a whole grey frame: (x, y, w, h) -> the w x h grey pixels there. */
export function greyRegions(grey, width) {
  return (x, y, w, h) => {
    const out = new Uint8Array(w * h);
    for (let row = 0; row < h; row++) out.set(grey.subarray((y + row) * width + x, (y + row) * width + x + w), row * w);
    return out;
  };
}

/** A region reader of a canvas: only the pixels a face's square needs are read back and made grey, not the frame. */
export function canvasRegions(context) {
  return (x, y, w, h) => toGrey(context.getImageData(x, y, w, h).data, w, h);
}

/**
 * crop_face's square: centred on the box, side sqrt(w * h) * (1 + margin), edge pixels repeated past the
 * border; then resized to outW x outH as FerImageProcessor does. `read` gives a region's grey pixels
 * (greyRegions, canvasRegions) of a width x height frame.
 */
export function cropFaceFrom(read, width, height, box, margin, outW, outH) {
  const side = Math.max(1, roundHalfEven(Math.sqrt((box.x1 - box.x0) * (box.y1 - box.y0)) * (1 + margin)));
  const left = roundHalfEven((box.x0 + box.x1) / 2 - side / 2), top = roundHalfEven((box.y0 + box.y1) / 2 - side / 2);
  const clampX = (x) => Math.min(Math.max(x, 0), width - 1), clampY = (y) => Math.min(Math.max(y, 0), height - 1);
  // The frame's pixels the square takes, past-the-border ones included as the edge's.
  const rx = clampX(left), ry = clampY(top), rw = clampX(left + side - 1) - rx + 1, rh = clampY(top + side - 1) - ry + 1;
  const region = read(rx, ry, rw, rh);
  const square = new Uint8Array(side * side);
  for (let y = 0; y < side; y++) {
    const row = (clampY(top + y) - ry) * rw;
    for (let x = 0; x < side; x++) square[y * side + x] = region[row + clampX(left + x) - rx];
  }
  return resizeGrey(square, side, side, outW, outH);
}

/** cropFaceFrom of a whole grey frame (width x height pixels). */
export function cropFace(grey, width, height, box, margin, outW, outH) {
  return cropFaceFrom(greyRegions(grey, width), width, height, box, margin, outW, outH);
}

export class Classifier {
  /**
   * @param {object} session An InferenceSession of the model's onnx/model_quantized.onnx.
   * @param {object} ort The onnxruntime-web module.
   * @param {object} config The model's config.json (id2label).
   * @param {object} processor Its preprocessor_config.json (size, face_crop_margin, rescale and normalisation).
   */
  constructor(session, ort, config, processor) {
    this.session = session;
    this.ort = ort;
    const ids = Object.keys(config.id2label).map(Number).sort((a, b) => a - b);
    this.labels = ids.map((id) => config.id2label[id]);
    // A face whose top (calibrated) probability is below this is "unsure" (config.json, fer_hf.calibration).
    this.unsureThreshold = config.unsure_threshold ?? 0;
    this.margin = processor.face_crop_margin ?? 0.1;  // DEFAULT_MARGIN of face_detection.py
    this.width = processor.size?.width ?? 48;
    this.height = processor.size?.height ?? 48;
    this.rescale = processor.do_rescale === false ? 1 : (processor.rescale_factor ?? 1 / 255);
    this.mean = processor.do_normalize === false ? 0 : (processor.image_mean?.[0] ?? 0.5);
    this.std = processor.do_normalize === false ? 1 : (processor.image_std?.[0] ?? 0.25);
    if (processor.face_align) console.warn("fer-hf: this model asks for aligned faces; the browser crops them plain.");
  }

  static async load(ort, modelUrl, config, processor) {
    const session = await ort.InferenceSession.create(modelUrl, { executionProviders: ["wasm"] });
    return new Classifier(session, ort, config, processor);
  }

  /** Class probabilities of each box's face in a width x height frame whose grey regions `read` gives
   * (greyRegions, canvasRegions): one array per box, in `labels` order. */
  async classify(read, width, height, boxes) {
    if (!boxes.length) return [];
    const size = this.width * this.height;
    const input = new Float32Array(boxes.length * size);
    const rescale = Math.fround(this.rescale);
    boxes.forEach((box, b) => {
      const face = cropFaceFrom(read, width, height, box, this.margin, this.width, this.height);
      for (let i = 0; i < size; i++) input[b * size + i] = (Math.fround(face[i] * rescale) - this.mean) / this.std;
    });
    const tensor = new this.ort.Tensor("float32", input, [boxes.length, 1, this.height, this.width]);
    const logits = (await this.session.run({ pixel_values: tensor })).logits.data;
    const classes = this.labels.length;
    return boxes.map((_, b) => {
      const row = Array.from(logits.subarray(b * classes, (b + 1) * classes));
      const top = Math.max(...row);
      const exps = row.map((v) => Math.exp(v - top));
      const total = exps.reduce((a, v) => a + v, 0);
      return exps.map((v) => v / total);
    });
  }
}
