"""The oneDNN convolution (mtljax/models/onednn/) against `lax.conv_general_dilated`.

Every conv shape of ResNet-18 at 304 px (batch 1), the U-Net's and the small CNN's, forward and
both gradients, equal XLA's to float32 rounding; a second-order product (the gradient, with
respect to the kernel, of the squared input gradient: what the explanation-guided losses take)
equals XLA's second order (oneDNN has no float64 convolution on CPU, so float64 runs XLA's and a
finite-difference check in float64 would test XLA only); vmap over an ensemble axis, jit, a mesh
of two CPU devices; a tiny config trains end to end with conv=onednn to the metrics of xla.

CI runs this file twice: as is (the library builds and loads: these tests fail if it does not),
and with MTLJAX_ONEDNN=0, where the tests of the fallback run instead (one line on stderr, XLA's
results).
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mtljax.models import convolution
from mtljax.models.onednn import build, ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFF = os.environ.get(build.ENV_SWITCH) == "0"
needs_library = pytest.mark.skipif(OFF, reason=f"{build.ENV_SWITCH}=0: the fallback tests run")
only_off = pytest.mark.skipif(not OFF, reason=f"runs with {build.ENV_SWITCH}=0 (CI's second run)")

# (name, batch, size, cin, cout, kernel, stride, padding, dilation, groups)
RESNET18_304 = [
  ("stem 7x7/2", 1, 304, 4, 64, 7, 2, 3, 1, 1),
  ("stage1 3x3", 1, 76, 64, 64, 3, 1, 1, 1, 1),
  ("stage2 3x3/2", 1, 76, 64, 128, 3, 2, 1, 1, 1),
  ("stage2 3x3", 1, 38, 128, 128, 3, 1, 1, 1, 1),
  ("stage2 1x1/2", 1, 76, 64, 128, 1, 2, 0, 1, 1),
  ("stage3 3x3/2", 1, 38, 128, 256, 3, 2, 1, 1, 1),
  ("stage3 3x3", 1, 19, 256, 256, 3, 1, 1, 1, 1),
  ("stage3 1x1/2", 1, 38, 128, 256, 1, 2, 0, 1, 1),
  ("stage4 3x3/2", 1, 19, 256, 512, 3, 2, 1, 1, 1),
  ("stage4 3x3", 1, 10, 512, 512, 3, 1, 1, 1, 1),
  ("stage4 1x1/2", 1, 19, 256, 512, 1, 2, 0, 1, 1),
]
# U-Net (3x3 SAME blocks, the concatenated skip, the 1x1 out) and the small CNN (3x3 SAME, stride 2
# on an even size: padding (0, 1)); one dilated and one grouped conv beyond the models.
OTHERS = [
  ("unet down0", 2, 32, 3, 32, 3, 1, "SAME", 1, 1),
  ("unet up0", 2, 32, 96, 32, 3, 1, "SAME", 1, 1),
  ("unet out 1x1", 2, 32, 32, 64, 1, 1, "SAME", 1, 1),
  ("cnn conv1", 4, 14, 1, 16, 3, 1, "SAME", 1, 1),
  ("cnn conv2 /2", 4, 14, 16, 32, 3, 2, "SAME", 1, 1),
  ("cnn conv3 /2", 4, 7, 32, 64, 3, 2, "SAME", 1, 1),
  ("dilated", 2, 13, 8, 8, 3, 1, 2, 2, 1),
  ("grouped", 2, 9, 8, 12, 3, 2, 1, 1, 4),
]


def _case(batch, size, cin, cout, k, stride, pad, dil, groups, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, cin // groups, cout)) / np.sqrt(k * k * cin), jnp.float32)
  padding = pad if isinstance(pad, str) else ((pad, pad), (pad, pad))
  kw = dict(rhs_dilation=(dil, dil), feature_group_count=groups)
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

  def conv(backend):
    def f(x, w):
      with convolution.use(backend):
        return convolution.conv_general_dilated(
          x, w, (stride, stride), padding, dimension_numbers=dn, **kw
        )

    return f

  return x, w, conv


def _close(got, want, rtol=2e-5):
  """Equal to float32 rounding: elementwise, relative to the largest entry (sums of many terms)."""
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape
  scale = float(np.max(np.abs(want))) or 1.0
  np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def _uses_onednn(f, *args) -> bool:
  return "mtljax_onednn_conv" in jax.jit(f).lower(*args).as_text()


@needs_library
def test_the_library_builds_and_loads():
  assert build.load() and ops.available()
  assert os.path.exists(build.library_path())


@needs_library
@pytest.mark.parametrize("case", RESNET18_304 + OTHERS, ids=lambda c: c[0])
def test_forward_and_both_gradients_equal_xla(case):
  x, w, conv = _case(*case[1:])
  assert _uses_onednn(conv("onednn"), x, w) and not _uses_onednn(conv("xla"), x, w)
  _close(conv("onednn")(x, w), conv("xla")(x, w))
  rng = np.random.default_rng(1)
  ct = jnp.asarray(rng.normal(size=conv("xla")(x, w).shape), jnp.float32)
  grads = {
    b: jax.vjp(conv(b), x, w)[1](ct)  # (input gradient, kernel gradient)
    for b in ("onednn", "xla")
  }
  _close(grads["onednn"][0], grads["xla"][0])
  _close(grads["onednn"][1], grads["xla"][1], rtol=5e-5)  # sums over B·OH·OW terms


@needs_library
@pytest.mark.parametrize(
  "case", [RESNET18_304[2], OTHERS[4], OTHERS[6], OTHERS[7]], ids=lambda c: c[0]
)
def test_second_order_equals_xla(case):
  """d/dw ||d/dx Σ tanh(conv(x, w))||² (the double-backward of an input-gradient loss) and, for
  the other mixed order, d/dx of the same: each of the three kernels differentiated again."""
  x, w, conv = _case(*case[1:])

  def penalty(backend):
    def inner(x, w):
      return jnp.sum(jnp.tanh(conv(backend)(x, w)))

    return lambda x, w: jnp.sum(jax.grad(inner)(x, w) ** 2) + jnp.sum(jax.grad(inner, 1)(x, w) ** 2)

  got = jax.jit(jax.grad(penalty("onednn"), (0, 1)))(x, w)
  want = jax.grad(penalty("xla"), (0, 1))(x, w)
  _close(got[0], want[0], rtol=1e-4)
  _close(got[1], want[1], rtol=1e-4)


@needs_library
def test_vmap_over_an_ensemble_axis_and_jit():
  """Members' kernels stacked on a leading axis (the ensemble), inputs shared or per member, and
  a nested vmap (members × targets), each under jit and differentiated."""
  x, w, conv = _case(2, 9, 4, 6, 3, 2, 1, 1, 1)
  rng = np.random.default_rng(2)
  ws = jnp.asarray(rng.normal(size=(3, *w.shape)), jnp.float32)
  xs = jnp.asarray(rng.normal(size=(3, *x.shape)), jnp.float32)
  for axes, args in (((None, 0), (x, ws)), ((0, 0), (xs, ws)), ((0, None), (xs, w))):
    got = jax.jit(jax.vmap(conv("onednn"), axes))(*args)
    _close(got, jax.vmap(conv("xla"), axes)(*args))
  nested = lambda b: jax.vmap(jax.vmap(conv(b), (None, 0)), (0, None))
  _close(jax.jit(nested("onednn"))(xs, ws), nested("xla")(xs, ws))
  loss = lambda b: (
    lambda w, x: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(b)(x, w))))(x) ** 2)
  )
  per_member = lambda b: jax.vmap(jax.grad(loss(b)), (0, None))
  _close(jax.jit(per_member("onednn"))(ws, x), per_member("xla")(ws, x), rtol=1e-4)


@needs_library
def test_the_library_counts_its_work_and_runs_from_any_thread():
  """One problem per kernel call, the kernel reordered once per call, primitives created once per
  shape; the same results on the library's executor thread, on the calling threads
  (MTLJAX_ONEDNN_EXECUTOR=0) and from several Python threads at once."""
  import concurrent.futures

  x, w, conv = _case(2, 9, 4, 6, 3, 2, 1, 1, 1)

  def f(x, w):
    y, vjp = jax.vjp(conv("onednn"), x, w)
    return y, *vjp(jnp.ones_like(y))

  f = jax.jit(f)
  first = f(x, w)
  build.stats(reset=True)
  jax.block_until_ready(f(x, w))
  s = build.stats(reset=True)
  for kind in build.KINDS:
    assert s[f"calls_{kind}"] == s[f"problems_{kind}"] == 1, s
  assert s["plan_misses"] == 0 and s["plan_hits"] == 3 and s["caller_threads"] >= 1, s
  assert s["reorder_bytes_fwd"] >= w.size * 4 and s["conv_ns_fwd"] > 0, s
  try:
    os.environ["MTLJAX_ONEDNN_EXECUTOR"] = "0"
    direct = f(x, w)
  finally:
    del os.environ["MTLJAX_ONEDNN_EXECUTOR"]
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    threads = list(pool.map(lambda _: f(x, w), range(8)))
  for got in [direct, *threads]:
    for a, b in zip(got, first):
      np.testing.assert_array_equal(a, b)


@needs_library
def test_a_mesh_of_two_cpu_devices():
  """Under jit with the batch sharded over 2 simulated devices each device convolves its own rows
  (the custom calls take half the batch, nothing gathers the activations; the kernel gradient's
  partial sums meet in an all-reduce), and with an ensemble's members sharded each device runs
  its own member; the results are XLA's on one device."""
  code = r"""
import re
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from mtljax.models import convolution
assert len(jax.devices()) == 2
x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 12, 12, 3)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 3, 5)), jnp.float32)
ws = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 3, 3, 5)), jnp.float32)
def loss(w, x, backend="onednn"):
  with convolution.use(backend):
    y = convolution.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sum(jnp.tanh(y))
mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
xs = jax.device_put(x, NamedSharding(mesh, P("data")))
wss = jax.device_put(ws, NamedSharding(mesh, P("data")))
def calls(f, *args):
  hlo = f.lower(*args).compile().as_text()
  assert "all-gather" not in hlo, hlo
  pattern = r'= f32\[([\d,]+)\][^=]*custom_call_target="mtljax_onednn_conv_'
  return hlo, {t: re.findall(pattern + t, hlo) for t in ("fwd", "bwd_weights")}
f = jax.jit(jax.value_and_grad(loss))
hlo, shapes = calls(f, w, xs)
assert shapes == {"fwd": ["2,6,6,5"], "bwd_weights": ["3,3,3,5"]}, shapes
assert re.search(r"all-reduce\(.*%ffi_call", hlo), hlo
(l2, g2), (l1, g1) = f(w, xs), jax.value_and_grad(loss)(w, x, "xla")
np.testing.assert_allclose(l2, l1, rtol=1e-5)
np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-4)
fv = jax.jit(jax.vmap(jax.value_and_grad(loss), (0, None)))
want = jax.vmap(jax.value_and_grad(lambda w, x: loss(w, x, "xla")), (0, None))(ws, x)
for args, fwd in (((ws, xs), "2,2,6,6,5"), ((wss, x), "1,4,6,6,5")):  # rows split, members split
  assert calls(fv, *args)[1]["fwd"] == [fwd]
  got = fv(*args)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)
print("OK")
"""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=ROOT)
  res = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
  )
  assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_ensembles_of_conv_models_vmap_over_members_with_onednn_kernels():
  """On CPU the members of a conv model loop with XLA's convolutions (a vmapped kernel is a slow
  grouped convolution there) and vmap with oneDNN's (one call takes the member axis, no copy of
  each member's kernels out of the stack); the explain run sets the backend from config.conv."""
  from mtljax.attribution import ensemble

  conv = {"kernel": jnp.zeros((3, 3, 3, 4, 8))}
  assert ensemble.resolve_strategy("auto", conv, backend="cpu") == "loop"
  with convolution.use("xla"):
    assert ensemble.resolve_strategy("auto", conv, backend="cpu") == "loop"
  for backend in ("onednn", "auto"):
    with convolution.use(backend):
      assert convolution.runs_onednn() == (not OFF)
      want = "loop" if OFF else "vmap"
      assert ensemble.resolve_strategy("auto", conv, backend="cpu") == want
      assert ensemble.resolve_strategy("loop", conv, backend="cpu") == "loop"


def _tiny_digits(conv: str, workdir: str) -> dict:
  from configs import digits
  from mtljax.models import multitask
  from mtljax.train import loop

  c = digits.get_config("tiny,encoder=cnn")
  c.conv = conv
  c.data.synthetic.dir = os.path.join(os.path.dirname(workdir), "data")
  c.explanation_loss.kind = "rrr"  # an input-gradient penalty: second order through the convs
  c.data.synthetic.num_train, c.data.synthetic.num_val = 128, 64
  c.data.stats_examples = 128
  c.train.num_epochs = 1
  assert multitask.build_model(c).conv == conv  # the key reaches the model
  return loop.train_and_evaluate(c, workdir)


@needs_library
def test_a_tiny_config_trains_to_the_same_metrics(tmp_path):
  """digits:tiny with the small CNN and the explanation loss (a second-order term through the
  convolutions), one epoch: the same validation metrics with oneDNN as with XLA."""
  xla = _tiny_digits("xla", str(tmp_path / "xla"))
  onednn = _tiny_digits("onednn", str(tmp_path / "onednn"))
  assert xla["val"].keys() == onednn["val"].keys()
  for k, v in xla["val"].items():
    np.testing.assert_allclose(onednn["val"][k], v, rtol=2e-3, atol=2e-3, err_msg=k)


# Every way `multitask.build_model` builds a model from a config: the multitask model and the
# MTC-LIM model (its STC form, one encoder per task, and a full LIM form).
BUILDERS = [
  ("configs/digits.py", "tiny,encoder=cnn", {}),
  ("configs/facades.py", "tiny", {"model.variant": "STC"}),
  ("configs/facades.py", "tiny", {"model.variant": "LIM-MS_ALL"}),
]


@pytest.mark.parametrize("family,variant,overrides", BUILDERS, ids=lambda b: str(b))
def test_every_model_builder_honours_config_conv(family, variant, overrides):
  """The model `build_model` returns carries `config.conv` and its traced apply runs the
  convolutions there: oneDNN's kernels with "onednn" (when they load), XLA's with "xla"."""
  import importlib

  from mtljax.models import multitask

  module = importlib.import_module(family[:-3].replace("/", "."))
  traced = {}
  for conv in ("xla", "onednn"):
    c = module.get_config(variant)
    for key, value in overrides.items():
      section, name = key.split(".")
      c[section][name] = value
    c.conv = conv
    model = multitask.build_model(c)
    assert model.conv == conv, type(model).__name__
    assert model.clone(conv="xla").conv == "xla"  # what the export does to any built model
    inputs = {m: jnp.zeros((2, 16, 16, 3), jnp.float32) for m in c.inputs}
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
    apply = lambda v, x, model=model: model.apply(v, x, train=False)[0]
    traced[conv] = _uses_onednn(apply, variables, inputs)
  assert traced == {"xla": False, "onednn": not OFF}


def test_a_wrong_backend_is_a_config_error(tmp_path):
  cmd = [
    sys.executable, "-m", "mtljax.main", "--config=configs/digits.py:tiny",
    f"--workdir={tmp_path}", "--config.conv=cudnn",
  ]  # fmt: skip
  res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert res.returncode == 2, res.stderr[-2000:]
  assert res.stderr.strip().splitlines() == [
    "error: config.conv='cudnn' is not one of ('auto', 'xla', 'onednn')"
  ], res.stderr


_FALLBACK = """
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from mtljax.models import convolution
x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 9, 3)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 3, 4)), jnp.float32)
dn = ("NHWC", "HWIO", "NHWC")
for b in ("onednn", "auto", "onednn"):
  with convolution.use(b):
    f = lambda x, w: convolution.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    assert "mtljax_onednn" not in jax.jit(f).lower(x, w).as_text()
    np.testing.assert_array_equal(f(x, w), lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn))
print("OK")
"""


def _fallback(env: dict) -> list[str]:
  env = dict(os.environ, PYTHONPATH=ROOT, **env)
  res = subprocess.run(
    [sys.executable, "-c", _FALLBACK], env=env, capture_output=True, text=True, timeout=300
  )
  assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]
  return [l for l in res.stderr.splitlines() if "oneDNN" in l]


@only_off
def test_switched_off_says_so_once_and_runs_xla():
  assert _fallback({}) == [
    "mtljax: oneDNN convolutions unavailable (MTLJAX_ONEDNN=0); XLA's convolution runs"
  ]


def test_a_library_that_cannot_be_built_says_why_once_and_runs_xla(tmp_path):
  """No compiler and an empty cache (a fresh machine without g++): one line, XLA's results."""
  lines = _fallback({"CXX": "no-such-compiler", "XDG_CACHE_HOME": str(tmp_path)})
  reason = "MTLJAX_ONEDNN=0" if OFF else "no C++ compiler (no-such-compiler) on PATH"
  assert lines == [f"mtljax: oneDNN convolutions unavailable ({reason}); XLA's convolution runs"]
