// Live, in the visitor's browser: the webcam's faces found (YuNet) and labelled (the model's int8 ONNX) by
// onnxruntime-web, WASM, one thread. No frame leaves the page; every file comes from where this one does.
//
//   import { start } from "./live.js";
//   start(element, {runtime, detector, config, preprocessor, model, serverTab});
//
// runtime: URL folder of the vendored onnxruntime-web files (ending in "/"); detector: yunet_s_dynamic.onnx;
// config, preprocessor, model: the model's config.json, preprocessor_config.json and onnx/model_quantized.onnx
// (model null: the model has none); serverTab: the name of the demo tab that labels frames on the server, or null.
// The running state is window.ferLive = {frames, fps, faces: [{label, score, box, track, unsure}], error, ready, camera,
// ms (the last frame's times)};
// window.ferLabelImage(url) labels one still image (single view, no tracking), as Python's face pipeline does.

import { FaceDetector } from "./detector.js";
import { Classifier, canvasRegions, greyRegions, toGrey } from "./classifier.js";
import { FaceTracker } from "./tracker.js";

// The webcam stream's detector side, as the server-side live tab's (app.py STREAM_DETECT_SIDE); stills are
// searched at the photos' 480 px (Python's FaceDetector default).
const STREAM_SIDE = 320;
const PHOTO_SIDE = 480;
const LARGEST = "#f97316", OTHER = "#38bdf8";  // the demo's box colours

function layout(root) {
  root.innerHTML = `
    <div class="fer-live">
      <p class="fer-live-status" role="status">Loading the face detector and the model…</p>
      <p class="fer-live-error" role="alert" hidden></p>
      <canvas class="fer-live-canvas" style="max-width: 100%; display: block"></canvas>
      <video class="fer-live-video" playsinline muted hidden></video>
    </div>`;
  return {
    status: root.querySelector(".fer-live-status"),
    error: root.querySelector(".fer-live-error"),
    canvas: root.querySelector(".fer-live-canvas"),
    video: root.querySelector(".fer-live-video"),
  };
}

function showError(parts, message, serverTab) {
  window.ferLive.error = message;
  parts.status.hidden = true;
  parts.error.hidden = false;
  parts.error.textContent = message + " ";
  if (serverTab) {
    const link = document.createElement("a");
    link.href = "#";
    link.className = "fer-live-server-tab";
    link.textContent = `Use the “${serverTab}” tab instead: it labels the frames on the server.`;
    link.onclick = (event) => {
      event.preventDefault();
      [...document.querySelectorAll("[role=tab]")].find((tab) => tab.textContent.trim() === serverTab)?.click();
    };
    parts.error.append(link);
  }
}

function cameraMessage(error) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return "This page cannot use a camera here: browsers allow it only on secure pages (https, or localhost).";
  }
  if (error?.name === "NotAllowedError") {
    return "The camera was not allowed. Allow it in the browser's address bar and open this tab again.";
  }
  if (error?.name === "NotFoundError" || error?.name === "OverconstrainedError") return "No camera was found.";
  if (error?.name === "NotReadableError") return "The camera is in use by another program.";
  return `The camera could not be started (${error?.name || "error"}: ${error?.message || error}).`;
}

async function fetchJson(url, name) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${name} could not be loaded (HTTP ${response.status} from ${url}).`);
  try {
    return await response.json();
  } catch (error) {
    throw new Error(`${name} is not valid JSON (${error.message}).`);
  }
}

async function loadModels(options) {
  const ort = await import(options.runtime + "ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = options.runtime;  // the vendored .wasm/.mjs, never a CDN
  ort.env.wasm.numThreads = 1;  // several threads need cross-origin isolation, which a Gradio page lacks
  const [config, processor] = await Promise.all([
    fetchJson(options.config, "The model's config.json"),
    fetchJson(options.preprocessor, "The model's preprocessor_config.json"),
  ]);
  if (!config.id2label) throw new Error("The model's config.json has no id2label: not an image classifier.");
  if (config.num_channels !== 1) {
    // The page makes the FER CNN's grey crops; a model of colour images (a ViT) needs the server-side tab.
    throw new Error(`This model (${config.model_type}) takes colour images; the browser makes grey face crops only.`);
  }
  const detector = await FaceDetector.load(ort, options.detector, STREAM_SIDE);
  let classifier;
  try {
    classifier = await Classifier.load(ort, options.model, config, processor);
  } catch (error) {
    throw new Error(`The model's ONNX file could not be loaded from ${options.model} (${error.message || error}).`);
  }
  return { detector, classifier };
}

/** Sets a canvas's size only when it changes: each assignment clears it and allocates a new backing store. */
function fitCanvas(canvas, width, height) {
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
}

function pixelsOf(source, width, height, canvas) {
  fitCanvas(canvas, width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(source, 0, 0, width, height);
  return toGrey(context.getImageData(0, 0, width, height).data, width, height);
}

async function label(detector, classifier, source, width, height, grey, side) {
  const boxes = await detector.detect(source, width, height, side);
  const probabilities = await classifier.classify(greyRegions(grey, width), width, height, boxes);
  return boxes.map((box, i) => ({ box: [box.x0, box.y0, box.x1, box.y1], detection_score: box.score, scores: probabilities[i] }));
}

function withLabels(face, labels, unsureThreshold) {
  const best = face.scores.reduce((b, v, i) => (v > face.scores[b] ? i : b), 0);
  return { ...face, label: labels[best], score: face.scores[best], unsure: face.scores[best] < unsureThreshold };
}

// "happy 87%"; for a face the model is unsure of, its top two: "unsure: happy 41% / neutral 35%" (as the Photo tab).
function caption(face, labels) {
  if (!face.unsure) return `${face.label} ${Math.round(face.score * 100)}%`;
  const [first, second] = face.scores.map((p, i) => [p, labels[i]]).sort((a, b) => b[0] - a[0]);
  return `unsure: ${first[1]} ${Math.round(first[0] * 100)}% / ${second[1]} ${Math.round(second[0] * 100)}%`;
}

function draw(canvas, video, faces, labels) {
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0, canvas.width, canvas.height);
  const side = Math.max(canvas.width, canvas.height);
  const line = Math.max(2, Math.round(side / 250));
  context.font = `${Math.max(12, Math.round(side / 40))}px sans-serif`;
  context.textBaseline = "top";
  // The largest face last, so that its caption is on top.
  for (const [index, face] of [...faces.entries()].reverse()) {
    const [x0, y0, x1, y1] = face.box;
    const colour = index === 0 ? LARGEST : OTHER;
    context.strokeStyle = colour;
    context.lineWidth = index === 0 ? 2 * line : line;
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const text = `#${face.track} ${caption(face, labels)}`;
    const height = parseInt(context.font, 10) + 2 * line, width = context.measureText(text).width + 2 * line;
    const tx = Math.min(x0, canvas.width - width), ty = y0 >= height ? y0 - height : y0;
    context.fillStyle = colour;
    context.fillRect(tx, ty, width, height);
    context.fillStyle = "black";
    context.fillText(text, tx + line, ty + line);
  }
}

export async function start(root, options) {
  window.ferLive = { frames: 0, fps: 0, faces: [], error: null, ready: false, camera: false };
  const parts = layout(root);
  if (typeof WebAssembly !== "object" || typeof WebAssembly.instantiate !== "function") {
    showError(parts, "This browser cannot run WebAssembly, which labelling in the browser needs.", options.serverTab);
    return;
  }
  if (!options.model) {
    showError(parts, "This model has no ONNX file (onnx/model_quantized.onnx; `python -m fer_hf export` makes it), " +
      "so the browser cannot run it.", options.serverTab);
    return;
  }
  let detector, classifier;
  try {
    ({ detector, classifier } = await loadModels(options));
  } catch (error) {
    showError(parts, error.message || String(error), options.serverTab);
    return;
  }
  const labels = classifier.labels;
  const scratch = document.createElement("canvas");
  window.ferLabelImage = async (url) => {
    const image = new Image();
    image.src = url;
    await image.decode();
    const width = image.naturalWidth, height = image.naturalHeight;
    const grey = pixelsOf(image, width, height, scratch);
    return (await label(detector, classifier, image, width, height, grey, PHOTO_SIDE)).map((f) => withLabels(f, labels, classifier.unsureThreshold));
  };
  window.ferLive.ready = true;

  const { video, canvas, status } = parts;
  let stream = null, tracker = new FaceTracker(labels), busy = false, shown = [];
  const frameCanvas = document.createElement("canvas");
  const frameContext = frameCanvas.getContext("2d", { willReadFrequently: true });

  // The callback is asked for again on every new video frame, so a frame that arrives while the last one is
  // still being labelled is labelled as soon as that ends; asking only after each frame would wait for the
  // next one and, when labelling takes most of a frame's time, halve the rate.
  let waiting = false;
  function onVideoFrame() {
    if (!stream) return;
    next();
    waiting = true;
    if (!busy) labelFrames();
  }

  async function labelFrames() {
    busy = true;
    try {
      while (waiting && stream && video.videoWidth) {
        waiting = false;
        await labelFrame();
      }
    } catch (error) {
      showError(parts, `Labelling stopped: ${error.message || error}`, options.serverTab);
      stopCamera();
    } finally {
      busy = false;
    }
  }

  async function labelFrame() {
    const width = video.videoWidth, height = video.videoHeight;
    const began = performance.now();
    fitCanvas(frameCanvas, width, height);
    frameContext.drawImage(video, 0, 0, width, height);
    const grabbed = performance.now();
    const boxes = await detector.detect(frameCanvas, width, height, STREAM_SIDE);
    const detected = performance.now();
    // Only the faces' squares are read back and made grey, not the whole frame.
    const probabilities = await classifier.classify(canvasRegions(frameContext), width, height, boxes);
    const classified = performance.now();
    const faces = tracker.update(boxes.map((box, i) => ({ box: [box.x0, box.y0, box.x1, box.y1], scores: probabilities[i] })),
      classified / 1000).map((face) => ({ ...face, unsure: face.score < classifier.unsureThreshold }));
    fitCanvas(canvas, width, height);
    draw(canvas, frameCanvas, faces, labels);
    const now = performance.now();
    shown = shown.filter((t) => now - t < 1000).concat(now);
    const live = window.ferLive;
    live.frames += 1;
    live.fps = shown.length > 1 ? (1000 * (shown.length - 1)) / (now - shown[0]) : 0;
    live.faces = faces.map(({ label, score, box, track, unsure }) => ({ label, score, box, track, unsure }));
    // The last frame's milliseconds: the frame taken, detection (YuNet and its input), classification (crops and
    // model), and in all (drawing included).
    live.ms = { grab: grabbed - began, detect: detected - grabbed, classify: classified - detected, total: now - began };
    const count = faces.length ? `${faces.length} face${faces.length > 1 ? "s" : ""}` : "No face in view";
    status.textContent = `${count} · ${live.fps.toFixed(1)} frames/s, labelled in this browser (nothing is sent)`;
  }
  let callback = 0;
  const next = () => {
    callback = video.requestVideoFrameCallback ? video.requestVideoFrameCallback(onVideoFrame) : requestAnimationFrame(onVideoFrame);
  };

  async function startCamera() {
    if (stream) return;
    status.textContent = "Asking for the camera…";
    try {
      if (!navigator.mediaDevices?.getUserMedia) throw new Error("no getUserMedia");
      stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    } catch (error) {
      showError(parts, cameraMessage(error), options.serverTab);
      return;
    }
    parts.error.hidden = true;
    status.hidden = false;
    window.ferLive.camera = true;
    tracker = new FaceTracker(labels);
    video.srcObject = stream;
    try {
      await video.play();
    } catch (error) {
      showError(parts, `The camera's video could not be played (${error.message || error}).`, options.serverTab);
      stopCamera();
      return;
    }
    status.textContent = "Camera on; finding faces…";
    next();
  }

  function stopCamera() {
    // One chain of frame callbacks at a time, however often the tab is left and opened again.
    if (video.cancelVideoFrameCallback) video.cancelVideoFrameCallback(callback);
    else cancelAnimationFrame(callback);
    stream?.getTracks().forEach((track) => track.stop());
    stream = null;
    window.ferLive.camera = false;
  }

  // The camera runs only while the tab is in view: leaving the tab turns it off.
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) startCamera();
    else stopCamera();
  }).observe(root);
}
