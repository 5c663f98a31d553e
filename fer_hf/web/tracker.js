// fer_hf/tracking.py's FaceTracker in the browser: the same matching, time-based smoothing and hysteresis,
// with the same defaults (chosen on benchmarks/results/smoothing.md).

export const TIME_CONSTANT = 0.2;
export const HYSTERESIS = 0.1;
export const MAX_AGE = 1.0;
export const MIN_IOU = 0.2;

function iou(a, b) {
  const overlap = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])) * Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap;
  return union ? overlap / union : 0;
}

const argmax = (values) => values.reduce((best, v, i) => (v > values[best] ? i : best), 0);

export class FaceTracker {
  constructor(labels, { timeConstant = TIME_CONSTANT, hysteresis = HYSTERESIS, maxAge = MAX_AGE, minIou = MIN_IOU } = {}) {
    Object.assign(this, { labels, timeConstant, hysteresis, maxAge, minIou });
    this.tracks = [];
    this.nextId = 1;
  }

  /**
   * One frame's faces ([{box: [x0, y0, x1, y1], scores: [...]}]) at `time` seconds -> the same faces with
   * track, smoothed scores, label and score.
   */
  update(faces, time) {
    this.tracks = this.tracks.filter((track) => time - track.lastSeen <= this.maxAge);
    const pairs = [];
    this.tracks.forEach((track, t) => faces.forEach((face, f) => pairs.push([iou(track.box, face.box), t, f])));
    // Best overlap first; ties as Python's sort of (iou, t, f) tuples in reverse.
    pairs.sort((a, b) => b[0] - a[0] || b[1] - a[1] || b[2] - a[2]);
    const matched = new Map(), used = new Set();
    for (const [overlap, t, f] of pairs) {
      if (overlap < this.minIou) break;
      if (!used.has(t) && !matched.has(f)) {
        matched.set(f, this.tracks[t]);
        used.add(t);
      }
    }
    return faces.map((face, f) => {
      let track = matched.get(f);
      if (!track) {
        track = { id: this.nextId++, scores: face.scores.slice(), label: argmax(face.scores), lastSeen: time };
        this.tracks.push(track);
      } else {
        // Weight of the new frame after dt seconds: 1 - exp(-dt / tau), whatever the frame rate.
        const step = Math.max(0, time - track.lastSeen);
        const weight = this.timeConstant === 0 ? 1 : 1 - Math.exp(-step / this.timeConstant);
        track.scores = track.scores.map((s, i) => s + weight * (face.scores[i] - s));
        const best = argmax(track.scores);
        if (track.scores[best] - track.scores[track.label] > this.hysteresis) track.label = best;
      }
      track.box = face.box;
      track.lastSeen = time;
      return { ...face, track: track.id, label: this.labels[track.label], score: track.scores[track.label], scores: track.scores.slice() };
    });
  }
}
