"""PyTorch-exact building blocks for the Flax ports.

Every layer here reproduces the matching ``torch.nn`` layer bit-for-bit up to float
rounding, so that a converted checkpoint gives the same outputs:

* convolutions use explicit symmetric padding (PyTorch pads both sides equally; Flax's
  ``SAME`` pads the extra pixel on the right/bottom only);
* max pooling supports ``ceil_mode`` (the extra right/bottom window is padded with -inf);
* BatchNorm is inference-only and reads running statistics from ``batch_stats``;
* PReLU has one learnable slope per channel.

All tensors are NHWC. Parameter names follow Flax conventions (``kernel``, ``bias``,
``scale``, ``mean``, ``var``, ``alpha``) so that converters are plain dict builders.
"""

import functools
from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

IntOr2 = Union[int, Sequence[int]]


def _pair(v: IntOr2) -> tuple[int, int]:
  if isinstance(v, int):
    return (v, v)
  v = tuple(v)
  assert len(v) == 2, v
  return (int(v[0]), int(v[1]))


class Conv2d(nn.Module):
  """``torch.nn.Conv2d`` in NHWC with explicit padding.

  Kernel layout is HWIO (``(kh, kw, in_channels // groups, features)``), i.e. a PyTorch
  OIHW weight transposed by ``(2, 3, 1, 0)``.
  """
  features: int
  kernel_size: IntOr2
  stride: IntOr2 = 1
  padding: IntOr2 = 0
  dilation: IntOr2 = 1
  groups: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    return _conv(self, x, ph, pw)


def _conv(m: Conv2d, x, ph: int, pw: int):
  """Convolution with parameters created directly on ``m`` (``kernel``, ``bias``)."""
  kh, kw = _pair(m.kernel_size)
  in_ch = x.shape[-1]
  if in_ch % m.groups:
    raise ValueError(f"{m.name}: {in_ch} input channels not divisible by groups={m.groups}")
  kernel = m.param("kernel", nn.initializers.lecun_normal(),
                   (kh, kw, in_ch // m.groups, m.features), jnp.float32)
  if (m.groups == in_ch == m.features and _pair(m.dilation) == (1, 1)
      and jax.default_backend() == "cpu"):
    y = depthwise_conv_taps(x, kernel.astype(x.dtype), _pair(m.stride), (ph, pw))
  elif (m.groups == 1 and in_ch <= THIN_INPUT_CHANNELS and _pair(m.dilation) == (1, 1)
        and _pair(m.stride) == (1, 1) and jax.default_backend() == "cpu"):
    y = conv_thin_input(x, kernel.astype(x.dtype), _pair(m.stride), (ph, pw))
  else:
    y = _conv_nhwc(x, kernel.astype(x.dtype), _pair(m.stride), (ph, pw), _pair(m.dilation), m.groups)
  if m.use_bias:
    bias = m.param("bias", nn.initializers.zeros, (m.features,), jnp.float32)
    y = y + bias.astype(y.dtype)
  return y


# Stride-1 convolutions with at most this many input channels (the first layer of a
# network on RGB or grey pixels: MTCNN's three, MPIIGaze's) take their input gradient from
# conv_thin_input's VJP on CPU. Strided ones keep XLA's (measured no faster this way:
# RetinaFace's 3x3/2 equal, FAN's 7x7/2 slower).
THIN_INPUT_CHANNELS = 4


def _conv_nhwc(x, kernel, stride: tuple[int, int], padding: tuple[int, int],
               dilation: tuple[int, int] = (1, 1), groups: int = 1):
  """XLA's convolution, NHWC / HWIO, symmetric padding (PyTorch's)."""
  return jax.lax.conv_general_dilated(x, kernel, window_strides=stride,
                                      padding=((padding[0], padding[0]), (padding[1], padding[1])),
                                      rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_thin_input(x, kernel, stride: tuple[int, int], padding: tuple[int, int]):
  """A dense convolution of an input with few channels (RGB), whose input gradient is a
  matmul to ``kh * kw * C`` columns and a sum of ``kh * kw`` shifted copies (col2im).

  XLA:CPU computes that gradient as a transposed convolution with ``C`` = 3 output
  channels, a thin matrix product: for MTCNN's ONet on 72 crops (3 -> 32 channels,
  48x48) it took 20.6 ms against 8.2 ms this way, and PNet's on 4 x 128 x 128 6.5 against
  4.1 ms (forward + backward). The forward is the ordinary convolution. Same maths; only
  the summation order differs. Any stride and padding.
  """
  return _conv_nhwc(x, kernel, stride, padding)


def _conv_thin_fwd(x, kernel, stride, padding):
  return _conv_nhwc(x, kernel, stride, padding), (x, kernel)


def _conv_thin_bwd(stride, padding, res, g):
  x, kernel = res
  kh, kw, c, f = kernel.shape
  n, h, w, _ = x.shape
  sh, sw = stride
  ph, pw = padding
  oh, ow = g.shape[1], g.shape[2]
  # cols[n, o, i, j, :] = g[n, o] . kernel[i, j, :, :]^T: what output position o sends to
  # input position o * s + (i, j) of the padded input.
  cols = (g.reshape(-1, f) @ kernel.reshape(kh * kw * c, f).T).reshape(n, oh, ow, kh, kw, c)
  hp, wp = h + 2 * ph, w + 2 * pw
  zero = jnp.zeros((), g.dtype)
  dx = None
  for i in range(kh):
    for j in range(kw):
      tap = jax.lax.pad(cols[:, :, :, i, j, :], zero,
                        ((0, 0, 0), (i, hp - i - (oh - 1) * sh - 1, sh - 1),
                         (j, wp - j - (ow - 1) * sw - 1, sw - 1), (0, 0, 0)))
      dx = tap if dx is None else dx + tap
  dx = dx[:, ph:ph + h, pw:pw + w]
  # The kernel's cotangent, XLA's own (dead code when only the input is differentiated).
  _, kernel_vjp = jax.vjp(lambda k: _conv_nhwc(x, k, stride, padding), kernel)
  return dx, kernel_vjp(g)[0]


conv_thin_input.defvjp(_conv_thin_fwd, _conv_thin_bwd)


def _depthwise_taps(x, kernel, stride: tuple[int, int], padding: tuple[int, int]):
  kh, kw = kernel.shape[:2]
  sh, sw = stride
  ph, pw = padding
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  oh = (h + 2 * ph - kh) // sh + 1
  ow = (w + 2 * pw - kw) // sw + 1
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = xp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :] * kernel[i, j, 0, :]
      out = tap if out is None else out + tap
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_taps(x, kernel, stride: tuple[int, int], padding: tuple[int, int]):
  """Depthwise convolution as a sum of ``kh * kw`` shifted, per-channel-scaled copies.

  XLA's CPU backend runs grouped convolutions with one group per channel 6-25x slower
  than this elementwise form (measured forward + backward on MobileNet-sized layers; see
  jax issue #23713), and RetinaFace-mnet is mostly depthwise layers. Same maths as
  ``conv_general_dilated`` with ``feature_group_count = C``; only the summation order differs.

  The gradient is written out (a custom VJP) as the transposed convolution in the same
  gather form: ``dx = taps(pad(dilate(g, stride)), flip(kernel))``. Left to autodiff, the
  backward pass is a sum of nine padded copies of ``g``, and XLA fuses it with the
  recomputed forward taps, evaluating them once per copy: RetinaFace-mnet's
  forward + backward on 4x256x256 took 83 ms that way, 45 ms with this VJP.
  """
  return _depthwise_taps(x, kernel, stride, padding)


def _depthwise_fwd(x, kernel, stride, padding):
  return _depthwise_taps(x, kernel, stride, padding), (x, kernel)


def _depthwise_bwd(stride, padding, res, g):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  sh, sw = stride
  ph, pw = padding
  _, h, w, _ = x.shape
  lh, lw = (g.shape[1] - 1) * sh + 1, (g.shape[2] - 1) * sw + 1
  # out[o] = sum_i xpad[o * s + i] k[i]  =>  dx[t] = sum_j G[t + j] k[kh - 1 - j], with G the
  # stride-dilated g shifted by kh - 1 - p.
  big = jax.lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (kh - 1 - ph, h + ph - lh, sh - 1),
                                                (kw - 1 - pw, w + pw - lw, sw - 1), (0, 0, 0)))
  dx = None
  for i in range(kh):
    for j in range(kw):
      tap = big[:, i:i + h, j:j + w, :] * kernel[kh - 1 - i, kw - 1 - j, 0, :]
      dx = tap if dx is None else dx + tap
  # The kernel's cotangent (dead code, removed by XLA, when only the input is differentiated).
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  dk = jnp.stack([jnp.stack([jnp.sum(xp[:, i:i + lh:sh, j:j + lw:sw, :] * g, axis=(0, 1, 2))
                             for j in range(kw)]) for i in range(kh)])[:, :, None, :]
  return dx, dk.astype(kernel.dtype)


depthwise_conv_taps.defvjp(_depthwise_fwd, _depthwise_bwd)


class Linear(nn.Module):
  """``torch.nn.Linear``: ``kernel`` is the PyTorch weight transposed."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features), jnp.float32)
    y = jnp.matmul(x, kernel.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return y


class BatchNorm2d(nn.Module):
  """Inference-mode ``torch.nn.BatchNorm2d`` (also fine for BatchNorm1d on (..., C)).

  ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with ``mean``/``var`` in the
  ``batch_stats`` collection and ``scale``/``bias`` in ``params``.
  """
  eps: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32)).value
    var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32)).value
    inv = jax.lax.rsqrt(var + self.eps)
    if self.use_scale:
      inv = inv * self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    y = (x - mean) * inv
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    return y


class PReLU(nn.Module):
  """``torch.nn.PReLU(num_parameters=C)``: ``max(0, x) + alpha * min(0, x)`` per channel."""
  init_value: float = 0.25

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.constant(self.init_value),
                       (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, alpha * x)


def leaky_relu(x, negative_slope: float):
  """``F.leaky_relu`` (``negative_slope == 0`` is a plain ReLU)."""
  if negative_slope == 0:
    return jax.nn.relu(x)
  return jnp.where(x >= 0, x, negative_slope * x)


def _pool_pads(size: int, k: int, s: int, p: int, ceil_mode: bool) -> tuple[int, int]:
  """Left/right padding that reproduces PyTorch's output size for one spatial dim."""
  span = size + 2 * p - k
  if ceil_mode:
    out = -(-span // s) + 1
    # PyTorch drops the last window if it would start inside the right padding only.
    if (out - 1) * s >= size + p:
      out -= 1
  else:
    out = span // s + 1
  right = max((out - 1) * s + k - size - p, 0)
  return p, right


def max_pool2d(x, kernel_size: IntOr2, stride: IntOr2 | None = None,
               padding: IntOr2 = 0, ceil_mode: bool = False):
  """``F.max_pool2d`` on NHWC input, padding with -inf (PyTorch semantics).

  The maximum of the window's strided taps, with a VJP that routes each output's gradient
  to the first maximum in the window's row-major order, as PyTorch and XLA's
  ``select_and_scatter`` do. XLA:CPU's ``reduce_window`` gradient (``select_and_scatter``)
  was 2.5-13x slower than this form on MTCNN's pools (forward + backward, one core): 156
  against 21 ms for ONet's first pool on 72 crops, half of ONet's share of an attack step.
  """
  kh, kw = _pair(kernel_size)
  sh, sw = _pair(stride if stride is not None else kernel_size)
  ph, pw = _pair(padding)
  pad_h = _pool_pads(x.shape[1], kh, sh, ph, ceil_mode)
  pad_w = _pool_pads(x.shape[2], kw, sw, pw, ceil_mode)
  xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)), constant_values=-jnp.inf)
  return _max_pool_taps(xp, (kh, kw), (sh, sw))


def _pool_tap(xp, i: int, j: int, window, strides):
  """Tap ``(i, j)`` of every window of the (padded) input: a strided slice."""
  (kh, kw), (sh, sw) = window, strides
  oh = (xp.shape[1] - kh) // sh + 1
  ow = (xp.shape[2] - kw) // sw + 1
  return jax.lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (oh - 1) + 1,
                                          j + sw * (ow - 1) + 1, xp.shape[3]), (1, sh, sw, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_taps(xp, window, strides):
  out = None
  for i in range(window[0]):
    for j in range(window[1]):
      tap = _pool_tap(xp, i, j, window, strides)
      out = tap if out is None else jnp.maximum(out, tap)
  return out


def _max_pool_fwd(xp, window, strides):
  out = _max_pool_taps(xp, window, strides)
  return out, (xp, out)


def _max_pool_bwd(window, strides, res, g):
  xp, out = res
  (kh, kw), (sh, sw) = window, strides
  taken = jnp.zeros(out.shape, bool)
  gx = jnp.zeros_like(xp)
  zero = jnp.zeros((), g.dtype)
  for i in range(kh):
    for j in range(kw):
      hit = (_pool_tap(xp, i, j, window, strides) == out) & ~taken
      taken = taken | hit
      # Transpose of the strided slice: the tap's gradient spread back with interior zeros.
      part = jnp.where(hit, g, zero)
      hi_h = xp.shape[1] - i - (sh * (out.shape[1] - 1) + 1)
      hi_w = xp.shape[2] - j - (sw * (out.shape[2] - 1) + 1)
      gx = gx + jax.lax.pad(part, zero, ((0, 0, 0), (i, hi_h, sh - 1), (j, hi_w, sw - 1), (0, 0, 0)))
  return (gx,)


_max_pool_taps.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool2d(x, kernel_size: IntOr2, stride: IntOr2 | None = None, padding: IntOr2 = 0,
               count_include_pad: bool = True):
  """``F.avg_pool2d`` on NHWC input (floor mode)."""
  kh, kw = _pair(kernel_size)
  sh, sw = _pair(stride if stride is not None else kernel_size)
  ph, pw = _pair(padding)
  pads = ((0, 0), (ph, ph), (pw, pw), (0, 0))
  summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, kh, kw, 1), (1, sh, sw, 1), pads)
  if count_include_pad or (ph == 0 and pw == 0):
    return summed / (kh * kw)
  ones = jnp.ones(x.shape[:3] + (1,), x.dtype)
  counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, kh, kw, 1), (1, sh, sw, 1), pads)
  return summed / counts


def interpolate_nearest(x, size: tuple[int, int]):
  """``F.interpolate(mode='nearest')`` to an explicit size (PyTorch's floor index rule)."""
  n, h, w, c = x.shape
  oh, ow = size
  iy = jnp.floor(jnp.arange(oh) * (h / oh)).astype(jnp.int32)
  ix = jnp.floor(jnp.arange(ow) * (w / ow)).astype(jnp.int32)
  iy = jnp.minimum(iy, h - 1)
  ix = jnp.minimum(ix, w - 1)
  return x[:, iy][:, :, ix]


def nchw_flatten(x):
  """Flatten NHWC features in PyTorch's NCHW order (for layers after ``view(N, -1)``)."""
  return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
