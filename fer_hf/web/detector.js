// YuNet-s (libfacedetection.train's ONNX export) in onnxruntime-web: the faces fer_hf.model.face_detection
// finds in Python with libfacedetection, the same network family, decoded as OpenCV's FaceDetectorYN does.

const STRIDES = [8, 16, 32];
// FaceDetector's defaults in Python: keep faces scoring at least 0.5; libfacedetection's NMS overlap.
export const SCORE_THRESHOLD = 0.5;
const NMS_IOU = 0.3;

/** Python's round(): halves to even, so that boxes and crops land on the same pixels. */
export function roundHalfEven(value) {
  const floor = Math.floor(value);
  const rest = value - floor;
  if (rest > 0.5 || (rest === 0.5 && floor % 2 !== 0)) return floor + 1;
  return floor;
}

function iou(a, b) {
  const overlap = Math.max(0, Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0)) *
    Math.max(0, Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0));
  const union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - overlap;
  return union > 0 ? overlap / union : 0;
}

export class FaceDetector {
  /**
   * @param {object} session An onnxruntime-web InferenceSession of yunet_s_dynamic.onnx.
   * @param {object} ort The onnxruntime-web module (for its Tensor).
   * @param {number} maxSide The longer side of the copy the detector sees (Python's FaceDetector.max_side).
   */
  constructor(session, ort, maxSide = 320) {
    this.session = session;
    this.ort = ort;
    this.maxSide = maxSide;
    this.canvas = document.createElement("canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
  }

  static async load(ort, url, maxSide) {
    const session = await ort.InferenceSession.create(url, { executionProviders: ["wasm"] });
    return new FaceDetector(session, ort, maxSide);
  }

  /**
   * Faces in a video frame, image or canvas of width x height pixels, largest first:
   * [{x0, y0, x1, y1, score}] in its pixels, x1 and y1 exclusive (as Python's Box).
   */
  async detect(source, width, height, maxSide = this.maxSide) {
    // The copy's size as Python's _target_size, padded to multiples of 32 as the network needs.
    const scale = maxSide / Math.max(width, height);
    const w = Math.max(1, roundHalfEven(width * scale)), h = Math.max(1, roundHalfEven(height * scale));
    const paddedW = Math.ceil(w / 32) * 32, paddedH = Math.ceil(h / 32) * 32;
    // A canvas assigned its own size again is cleared and reallocated: only on a change of size.
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.context.imageSmoothingQuality = "high";
    this.context.drawImage(source, 0, 0, w, h);
    const rgba = this.context.getImageData(0, 0, w, h).data;
    // N x 3 x H x W, BGR, 0-255, zeros in the padding (kept from frame to frame while the size stays).
    const plane = paddedW * paddedH;
    if (this.input?.length !== 3 * plane || this.inputWidth !== paddedW) {
      this.input = new Float32Array(3 * plane);
      this.inputWidth = paddedW;
    }
    const input = this.input;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = (y * w + x) * 4, o = y * paddedW + x;
        input[o] = rgba[i + 2];
        input[plane + o] = rgba[i + 1];
        input[2 * plane + o] = rgba[i];
      }
    }
    const outputs = await this.session.run({ input: new this.ort.Tensor("float32", input, [1, 3, paddedH, paddedW]) });
    const found = [];
    for (const stride of STRIDES) {
      const cls = outputs[`cls_${stride}`].data, obj = outputs[`obj_${stride}`].data, bbox = outputs[`bbox_${stride}`].data;
      const cols = paddedW / stride, rows = paddedH / stride;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const score = Math.sqrt(Math.min(Math.max(cls[i], 0), 1) * Math.min(Math.max(obj[i], 0), 1));
          if (score < SCORE_THRESHOLD) continue;
          const cx = (c + bbox[4 * i]) * stride, cy = (r + bbox[4 * i + 1]) * stride;
          const bw = Math.exp(bbox[4 * i + 2]) * stride, bh = Math.exp(bbox[4 * i + 3]) * stride;
          found.push({ x0: cx - bw / 2, y0: cy - bh / 2, x1: cx + bw / 2, y1: cy + bh / 2, score });
        }
      }
    }
    found.sort((a, b) => b.score - a.score);
    const kept = [];
    for (const box of found) if (kept.every((other) => iou(box, other) <= NMS_IOU)) kept.push(box);
    // Back to the frame's pixels, clipped to it, as FaceDetector.__call__ maps libfacedetection's boxes.
    const sx = width / w, sy = height / h;
    const boxes = [];
    for (const box of kept) {
      const x0 = Math.max(0, roundHalfEven(box.x0 * sx)), y0 = Math.max(0, roundHalfEven(box.y0 * sy));
      const x1 = Math.min(width, roundHalfEven(box.x1 * sx)), y1 = Math.min(height, roundHalfEven(box.y1 * sy));
      if (x1 - x0 >= 1 && y1 - y0 >= 1) boxes.push({ x0, y0, x1, y1, score: box.score });
    }
    const area = (b) => (b.x1 - b.x0) * (b.y1 - b.y0);
    return boxes.sort((a, b) => area(b) - area(a) || b.score - a.score);
  }
}
