"""The 3D face templates of ptgaze's head-pose fit, and the 68- to 5-point landmark map.

:data:`FACE_MODEL_68` is the canonical 68-point (Multi-PIE / iBUG) template in metres, in a
frame with its origin at the nose tip (point 30), X to the image right, Y down, Z into the
scene; the face looks along its own -Z. :data:`FACE_MODEL_5` is the 5-point subset in the
RetinaFace / MTCNN order ``[eye on the image left, eye on the image right, nose, mouth
corner on the image left, mouth corner on the image right]``, i.e. for a frontal face the
subject's right eye first. Its eye points are the means of the 6 eye-contour points (the
detectors mark roughly the pupil). "R" in the index names is the subject's right (image
left). Pure NumPy; used by :mod:`drsf_jax.geometry.headpose` and ``normalization``.
"""

import numpy as np


# ---- 3D face templates -------------------------------------------------------------------

# Canonical 3D positions of the 68 Multi-PIE / iBUG landmarks (0-based indices), in metres,
# in the template frame described in the module docstring (origin at the nose tip, point
# 30; outer eye corners 36 and 45 are 90 mm apart). Numeric data from hysts/ptgaze
# (ptgaze/common/face_model_68.py, FaceModel68.LANDMARKS, v0.3.0), MIT licence,
# Copyright (c) 2020 hysts.
FACE_MODEL_68 = np.array([
    [-0.07141807, -0.02827123,  0.08114384],  # 0
    [-0.07067417, -0.00961522,  0.08035654],  # 1
    [-0.06844646,  0.00895837,  0.08046731],  # 2
    [-0.06474301,  0.02708319,  0.08045689],  # 3
    [-0.05778475,  0.04384917,  0.07802191],  # 4
    [-0.04673809,  0.05812865,  0.07192291],  # 5
    [-0.03293922,  0.06962711,  0.06106274],  # 6
    [-0.01744018,  0.07850638,  0.04752971],  # 7
    [ 0.00000000,  0.08105961,  0.04251950],  # 8
    [ 0.01744018,  0.07850638,  0.04752971],  # 9
    [ 0.03293922,  0.06962711,  0.06106274],  # 10
    [ 0.04673809,  0.05812865,  0.07192291],  # 11
    [ 0.05778475,  0.04384917,  0.07802191],  # 12
    [ 0.06474301,  0.02708319,  0.08045689],  # 13
    [ 0.06844646,  0.00895837,  0.08046731],  # 14
    [ 0.07067417, -0.00961522,  0.08035654],  # 15
    [ 0.07141807, -0.02827123,  0.08114384],  # 16
    [-0.05977758, -0.04478580,  0.04562813],  # 17
    [-0.05055506, -0.05334294,  0.03834846],  # 18
    [-0.03756330, -0.05609241,  0.03158344],  # 19
    [-0.02423648, -0.05463779,  0.02510117],  # 20
    [-0.01168798, -0.04986641,  0.02050337],  # 21
    [ 0.01168798, -0.04986641,  0.02050337],  # 22
    [ 0.02423648, -0.05463779,  0.02510117],  # 23
    [ 0.03756330, -0.05609241,  0.03158344],  # 24
    [ 0.05055506, -0.05334294,  0.03834846],  # 25
    [ 0.05977758, -0.04478580,  0.04562813],  # 26
    [ 0.00000000, -0.03515768,  0.02038099],  # 27
    [ 0.00000000, -0.02350421,  0.01366667],  # 28
    [ 0.00000000, -0.01196914,  0.00658284],  # 29
    [ 0.00000000,  0.00000000,  0.00000000],  # 30
    [-0.01479319,  0.00949072,  0.01708772],  # 31
    [-0.00762319,  0.01179908,  0.01419133],  # 32
    [ 0.00000000,  0.01381676,  0.01205559],  # 33
    [ 0.00762319,  0.01179908,  0.01419133],  # 34
    [ 0.01479319,  0.00949072,  0.01708772],  # 35
    [-0.04500000, -0.03241500,  0.03976718],  # 36
    [-0.03705460, -0.03717230,  0.03579593],  # 37
    [-0.02751660, -0.03714814,  0.03425518],  # 38
    [-0.01919724, -0.03101962,  0.03359268],  # 39
    [-0.02813814, -0.02943970,  0.03345652],  # 40
    [-0.03763013, -0.02948442,  0.03497732],  # 41
    [ 0.01919724, -0.03101962,  0.03359268],  # 42
    [ 0.02751660, -0.03714814,  0.03425518],  # 43
    [ 0.03705460, -0.03717230,  0.03579593],  # 44
    [ 0.04500000, -0.03241500,  0.03976718],  # 45
    [ 0.03763013, -0.02948442,  0.03497732],  # 46
    [ 0.02813814, -0.02943970,  0.03345652],  # 47
    [-0.02847002,  0.03331642,  0.03667993],  # 48
    [-0.01796181,  0.02843251,  0.02335485],  # 49
    [-0.00742947,  0.02580570,  0.01630812],  # 50
    [ 0.00000000,  0.02755550,  0.01538404],  # 51
    [ 0.00742947,  0.02580570,  0.01630812],  # 52
    [ 0.01796181,  0.02843251,  0.02335485],  # 53
    [ 0.02847002,  0.03331642,  0.03667993],  # 54
    [ 0.01836060,  0.04233930,  0.02523355],  # 55
    [ 0.00808323,  0.04614537,  0.01820142],  # 56
    [ 0.00000000,  0.04688623,  0.01716318],  # 57
    [-0.00808323,  0.04614537,  0.01820142],  # 58
    [-0.01836060,  0.04233930,  0.02523355],  # 59
    [-0.02409981,  0.03367606,  0.03421466],  # 60
    [-0.00756874,  0.03192644,  0.01851247],  # 61
    [ 0.00000000,  0.03263345,  0.01732347],  # 62
    [ 0.00756874,  0.03192644,  0.01851247],  # 63
    [ 0.02409981,  0.03367606,  0.03421466],  # 64
    [ 0.00771924,  0.03711846,  0.01940396],  # 65
    [ 0.00000000,  0.03791103,  0.01808050],  # 66
    [-0.00771924,  0.03711846,  0.01940396],  # 67
], dtype=np.float64)
FACE_MODEL_68.setflags(write=False)

# 68-point index groups (0-based). "R" is the subject's right (image left).
REYE_CORNERS = (36, 39)
LEYE_CORNERS = (42, 45)
REYE_CONTOUR = tuple(range(36, 42))
LEYE_CONTOUR = tuple(range(42, 48))
NOSE_TIP = 30
NOSE_WINGS = (31, 35)
MOUTH_CORNERS = (48, 54)


def landmarks68_to_5(points: np.ndarray) -> np.ndarray:
  """The RetinaFace/MTCNN-style 5 points from 68 points (2D or 3D), ``(..., 68, D) -> (..., 5, D)``.

  Order: [image-left eye centre (subject's right eye: mean of points 36-41), image-right
  eye centre (mean of 42-47), nose tip (30), image-left mouth corner (48), image-right
  mouth corner (54)]: the order RetinaFace and MTCNN emit.
  """
  p = np.asarray(points, np.float64)
  if p.shape[-2] != 68:
    raise ValueError(f"expected 68 points on axis -2, got shape {p.shape}")
  return np.stack([
      p[..., REYE_CONTOUR, :].mean(axis=-2),
      p[..., LEYE_CONTOUR, :].mean(axis=-2),
      p[..., NOSE_TIP, :],
      p[..., MOUTH_CORNERS[0], :],
      p[..., MOUTH_CORNERS[1], :],
  ], axis=-2)


# The 5-point subset of the template, in the RetinaFace / MTCNN landmark order.
FACE_MODEL_5 = landmarks68_to_5(FACE_MODEL_68)
FACE_MODEL_5.setflags(write=False)

TEMPLATES = {"68": FACE_MODEL_68, "5": FACE_MODEL_5}
