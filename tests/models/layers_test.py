"""PyTorch-exactness of the building blocks in drsf_jax/models/layers.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drsf_jax.models import layers

torch = pytest.importorskip("torch")


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.mark.parity
@pytest.mark.parametrize("cin,cout,k,s,p,d,g,bias,hw", [
    (3, 8, 3, 1, 1, 1, 1, True, (13, 17)),
    (8, 8, 3, 2, 1, 1, 8, False, (14, 15)),     # depthwise, even size, stride 2
    (6, 9, 5, 2, 2, 1, 3, True, (11, 12)),      # grouped
    (4, 5, 3, 1, 2, 2, 1, True, (9, 10)),       # dilated
    (4, 6, 7, 2, 3, 1, 1, False, (20, 21)),
    (4, 6, 1, 1, 0, 1, 1, True, (5, 6)),
])
def test_conv2d_matches_torch(cin, cout, k, s, p, d, g, bias, hw):
  torch.manual_seed(0)
  conv = torch.nn.Conv2d(cin, cout, k, s, p, dilation=d, groups=g, bias=bias)
  x = np.random.default_rng(1).normal(size=(2, *hw, cin)).astype(np.float32)
  ref = nhwc(conv(nchw(x)))
  params = {"kernel": np.transpose(conv.weight.detach().numpy(), (2, 3, 1, 0))}
  if bias:
    params["bias"] = conv.bias.detach().numpy()
  m = layers.Conv2d(cout, k, s, p, d, g, bias)
  out = m.apply({"params": params}, jnp.asarray(x))
  assert out.shape == ref.shape
  assert rel_err(out, ref) < 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("k,s,p,ceil,hw", [
    (3, 2, 0, True, (12, 13)), (3, 2, 0, False, (12, 13)), (2, 2, 0, True, (7, 9)),
    (3, 2, 1, True, (10, 11)), (3, 1, 1, False, (6, 6)), (2, 2, 0, False, (5, 5)),
])
def test_max_pool_matches_torch(k, s, p, ceil, hw):
  x = np.random.default_rng(2).normal(size=(2, *hw, 3)).astype(np.float32)
  ref = nhwc(torch.nn.functional.max_pool2d(nchw(x), k, s, p, ceil_mode=ceil))
  out = layers.max_pool2d(jnp.asarray(x), k, s, p, ceil_mode=ceil)
  assert out.shape == ref.shape
  np.testing.assert_array_equal(np.asarray(out), ref)


@pytest.mark.parity
@pytest.mark.parametrize("k,s,p,ceil,hw", [
    (3, 2, 0, True, (12, 13)), (2, 2, 0, True, (7, 9)), (3, 2, 1, True, (10, 11)),
    (3, 1, 1, False, (6, 6)), (2, 2, 0, False, (5, 5)),
])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_gradient_matches_torch(k, s, p, ceil, hw, ties):
  # ties: values on a coarse grid in constant 2x2 blocks, as a pixelated face gives; each
  # window's gradient must go to its first maximum (row-major), as PyTorch routes it.
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, *hw, 3)).astype(np.float32)
  if ties:
    x = np.round(np.repeat(np.repeat(x[:, ::2, ::2], 2, 1), 2, 2)[:, :hw[0], :hw[1]] * 2) / 2
  g = rng.normal(size=nhwc(torch.nn.functional.max_pool2d(nchw(x), k, s, p, ceil_mode=ceil)).shape).astype(np.float32)
  xt = nchw(x).requires_grad_(True)
  (torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=ceil) * nchw(g)).sum().backward()
  ref = nhwc(xt.grad)
  out = jax.grad(lambda a: jnp.sum(layers.max_pool2d(a, k, s, p, ceil_mode=ceil) * g))(jnp.asarray(x))
  assert np.abs(ref).sum() > 0
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("k,s,p,include", [(2, 2, 0, True), (3, 1, 1, True), (3, 1, 1, False)])
def test_avg_pool_matches_torch(k, s, p, include):
  x = np.random.default_rng(3).normal(size=(2, 9, 10, 4)).astype(np.float32)
  ref = nhwc(torch.nn.functional.avg_pool2d(nchw(x), k, s, p, count_include_pad=include))
  out = layers.avg_pool2d(jnp.asarray(x), k, s, p, count_include_pad=include)
  assert rel_err(out, ref) < 1e-6


@pytest.mark.parity
def test_batchnorm_prelu_linear_match_torch():
  rng = np.random.default_rng(4)
  torch.manual_seed(4)
  bn = torch.nn.BatchNorm2d(5).eval()
  with torch.no_grad():
    bn.weight.normal_()
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 1.5)
  x = rng.normal(size=(2, 6, 7, 5)).astype(np.float32)
  ref = nhwc(bn(nchw(x)))
  out = layers.BatchNorm2d().apply(
      {"params": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy()},
       "batch_stats": {"mean": bn.running_mean.numpy(), "var": bn.running_var.numpy()}}, jnp.asarray(x))
  assert rel_err(out, ref) < 1e-6

  pr = torch.nn.PReLU(5)
  with torch.no_grad():
    pr.weight.uniform_(-0.5, 0.5)
  ref = nhwc(pr(nchw(x)))
  out = layers.PReLU().apply({"params": {"alpha": pr.weight.detach().numpy()}}, jnp.asarray(x))
  assert rel_err(out, ref) < 1e-7

  lin = torch.nn.Linear(5, 3)
  ref = lin(torch.from_numpy(x)).detach().numpy()
  out = layers.Linear(3).apply({"params": {"kernel": lin.weight.detach().numpy().T,
                                           "bias": lin.bias.detach().numpy()}}, jnp.asarray(x))
  assert rel_err(out, ref) < 1e-6


@pytest.mark.parity
@pytest.mark.parametrize("size", [(8, 10), (7, 9), (16, 20)])
def test_interpolate_nearest_matches_torch(size):
  x = np.random.default_rng(5).normal(size=(1, 4, 5, 2)).astype(np.float32)
  ref = nhwc(torch.nn.functional.interpolate(nchw(x), size=size, mode="nearest"))
  np.testing.assert_array_equal(np.asarray(layers.interpolate_nearest(jnp.asarray(x), size)), ref)


def test_nchw_flatten_matches_torch_view():
  x = np.random.default_rng(6).normal(size=(2, 3, 4, 5)).astype(np.float32)
  ref = nchw(x).reshape(2, -1).numpy()
  np.testing.assert_array_equal(np.asarray(layers.nchw_flatten(jnp.asarray(x))), ref)


@pytest.mark.parity
@pytest.mark.parametrize("s,hw", [(1, (17, 16)), (2, (16, 16)), (2, (15, 17))])
def test_depthwise_gradients_match_torch(s, hw):
  """The depthwise conv's hand-written VJP: input and kernel gradients equal torch autograd."""
  import jax
  c = 8
  torch.manual_seed(0)
  conv = torch.nn.Conv2d(c, c, 3, s, 1, groups=c, bias=False)
  x = np.random.default_rng(2).normal(size=(2, *hw, c)).astype(np.float32)
  xt = nchw(x).requires_grad_(True)
  torch.sin(conv(xt)).sum().backward()
  kernel = np.transpose(conv.weight.detach().numpy(), (2, 3, 1, 0))
  gx, gk = jax.grad(lambda x, k: jnp.sum(jnp.sin(layers.depthwise_conv_taps(x, k, (s, s), (1, 1)))),
                    argnums=(0, 1))(jnp.asarray(x), jnp.asarray(kernel))
  assert rel_err(gx, nhwc(xt.grad)) < 1e-5
  assert rel_err(gk, np.transpose(conv.weight.grad.numpy(), (2, 3, 1, 0))) < 1e-5


@pytest.mark.parity
@pytest.mark.parametrize("shape,k,stride,pad", [
    ((3, 20, 22, 3), 3, 1, 0), ((2, 17, 16, 3), 3, 2, 1), ((2, 24, 24, 1), 3, 1, 1),
    ((2, 19, 21, 3), 7, 2, 3), ((1, 12, 12, 3), 2, 1, 0),
])
def test_conv_thin_input_gradients_match_torch(shape, k, stride, pad):
  # The input gradient of conv_thin_input's VJP (a matmul to kh*kw*C columns and col2im)
  # and its kernel gradient against torch's conv2d backward, strided and padded too.
  rng = np.random.default_rng(11)
  x = rng.uniform(0, 1, size=shape).astype(np.float32)
  w = (rng.normal(size=(k, k, shape[-1], 10)) * 0.2).astype(np.float32)
  xt = nchw(x).requires_grad_(True)
  wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).requires_grad_(True)
  yt = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=pad)
  g = rng.normal(size=nhwc(yt).shape).astype(np.float32)
  (yt * nchw(g)).sum().backward()
  y, vjp = jax.vjp(lambda a, b: layers.conv_thin_input(a, b, (stride, stride), (pad, pad)),
                   jnp.asarray(x), jnp.asarray(w))
  dx, dw = vjp(jnp.asarray(g))
  assert rel_err(y, nhwc(yt.detach())) < 1e-5
  assert rel_err(dx, nhwc(xt.grad)) < 1e-5
  assert rel_err(dw, wt.grad.numpy().transpose(2, 3, 1, 0)) < 1e-5


def test_first_convs_take_the_thin_input_gradient_on_real_crops():
  # MTCNN's ONet on crops of a real frame: the gradient in the input through its first
  # convolution (3 -> 32, routed through conv_thin_input on CPU) equals XLA's own.
  if jax.default_backend() != "cpu":
    pytest.skip("conv_thin_input is the CPU backend's path")
  from drsf_jax.models import mtcnn
  from tests.support import read_frames, shared_file
  frames = read_frames(shared_file("data", "talking_head_a.mp4"), 2).astype(np.float32) / 255.0
  module = mtcnn.ONet()
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 48, 48, 3)))
  crops = jnp.asarray(frames[:, 60:156, 70:166][:, ::2, ::2])  # (2, 48, 48, 3) face crops.

  def grad(thin):
    old = layers.THIN_INPUT_CHANNELS
    layers.THIN_INPUT_CHANNELS = thin
    try:
      return jax.grad(lambda c: jnp.sum(module.apply(variables, (c - 0.5) * 2.0)[1] ** 2))(crops)
    finally:
      layers.THIN_INPUT_CHANNELS = old

  def traced(thin):
    old = layers.THIN_INPUT_CHANNELS
    layers.THIN_INPUT_CHANNELS = thin
    try:
      return str(jax.make_jaxpr(lambda c: module.apply(variables, c))(crops))
    finally:
      layers.THIN_INPUT_CHANNELS = old

  assert "name=conv_thin_input" in traced(4) and "name=conv_thin_input" not in traced(0)
  thin, xla = grad(4), grad(0)
  assert float(jnp.abs(xla).max()) > 0
  assert rel_err(thin, xla) < 1e-5
