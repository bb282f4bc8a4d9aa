"""The benchmarks compare like with like: the PyTorch mirrors in profiling/benchmarks/common.py
compute the same function as the JAX models they are built from (same weights, layouts converted),
and the ensemble strategies give the same attributions as Captum on them."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from profiling.benchmarks import common

torch = pytest.importorskip("torch", reason="the benchmark mirrors need PyTorch")
ONEDNN_OFF = os.environ.get("MTLJAX_ONEDNN") == "0"


@pytest.mark.parametrize("name,size", [("cnn", 16), ("mlp", 0), ("resnet18", 32)])
def test_torch_mirror_computes_the_same_function(name, size):
  model, stacked = common.init_ensemble(name, size, members=2)
  x = np.random.default_rng(0).normal(size=(3, *common.input_shape(name, size))).astype(np.float32)
  outs = []
  for k in range(2):
    variables = common.member(stacked, k)
    ours = np.asarray(model.apply(variables, jnp.asarray(x)))
    with torch.no_grad():
      theirs = common.torch_model(name, variables)(torch.from_numpy(common.to_nchw(x))).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(ours).max())
    outs.append(ours)
  # The members differ (independent seeds), so the comparison above is not vacuous.
  assert np.abs(outs[0] - outs[1]).max() > 1e-2


def test_attribution_bench_agrees_with_captum(tmp_path):
  pytest.importorskip("captum")
  from profiling.benchmarks import attribution_bench

  out = tmp_path / "bench.json"
  sys_argv = sys.argv
  sys.argv = [
    "attribution_bench.py",
    "--models",
    "cnn",
    "--members",
    "2",
    "--batch",
    "2",
    "--size",
    "16",
    "--ig-steps",
    "4",
    "--ig-chunk",
    "2",
    "--repeats",
    "1",
    "--methods",
    "ig",
    "gradcam",
    "--strategies",
    "auto",
    "loop",
    "--out",
    str(out),
  ]
  try:
    attribution_bench.main()
  finally:
    sys.argv = sys_argv
  import json

  rows = json.loads(out.read_text())["rows"]
  assert [r["method"] for r in rows] == ["ig", "gradcam"]
  for r in rows:
    assert r["max_rel_diff_vs_captum"] < 1e-4, r
    # A conv model: its members loop on CPU with XLA's convolutions, vmap with oneDNN's (--conv
    # auto, where they load).
    assert r["auto_picks"] == ("loop" if ONEDNN_OFF else "vmap"), r
    assert r["captum_s"] > 0 and r["auto_per_s"] > 0


@pytest.mark.parametrize("k,stride", [(3, 1), (7, 2)])
def test_conv_bench_kernel_gradient_forms_equal_xla(k, stride):
  """conv_bench's two matmul forms of a convolution's kernel gradient are the kernel gradient."""
  import jax

  from profiling.benchmarks import conv_bench

  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, 4))

  def conv(w):
    return jax.lax.conv_general_dilated(
      x, w, (stride, stride), [(k // 2, k // 2)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  y, vjp = jax.vjp(conv, w)
  g = jax.random.normal(jax.random.key(2), y.shape)
  ref = vjp(g)[0]
  for form in (conv_bench._dw_shift, conv_bench._dw_patches):
    np.testing.assert_allclose(form(x, g, k, stride), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("h,w", [(8, 6), (7, 9)])
def test_conv_bench_winograd_convolution_equals_xla(h, w):
  """conv_bench's Winograd F(2×2, 3×3) is the 3×3 SAME convolution, forward and both gradients,
  also when a side is odd (the last tile is cropped)."""
  import jax

  from profiling.benchmarks import conv_bench

  x = jax.random.normal(jax.random.key(0), (2, h, w, 5))
  k = jax.random.normal(jax.random.key(1), (3, 3, 5, 4))

  def xla(x, k):
    return jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  g = jax.random.normal(jax.random.key(2), (2, h, w, 4))
  want = [xla(x, k), *jax.vjp(xla, x, k)[1](g)]
  got = [conv_bench.winograd_conv3x3(x, k), *jax.vjp(conv_bench.winograd_conv3x3, x, k)[1](g)]
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_benchmark_cnn_runs_the_chosen_convolutions():
  """`--conv` reaches the 3-conv CNN (it once ran XLA's whatever was asked; ResNet-18 is the
  project's encoder, whose convolutions tests/test_onednn_conv.py checks)."""
  model, stacked = common.init_ensemble("cnn", 16, 1)
  x = jnp.zeros((2, *common.input_shape("cnn", 16)), jnp.float32)
  traced = {}
  for conv in ("xla", "auto"):
    with common.conv_backend(conv):
      text = jax.jit(model.apply).lower(common.member(stacked, 0), x).as_text()
    traced[conv] = "mtljax_onednn_conv_fwd" in text
  assert traced == {"xla": False, "auto": not ONEDNN_OFF}


def _bench_conv_onednn(main, argv, capsys):
  """Runs a benchmark's main with `--conv onednn`: its JSON when the kernels load, else the
  one-line error."""
  if ONEDNN_OFF:
    with pytest.raises(SystemExit, match="^error: --conv onednn: the oneDNN convolutions"):
      main(argv)
    return None
  main(argv)
  return json.loads(open(argv[argv.index("--out") + 1]).read())


def test_multitarget_bench_runs_with_onednn_convolutions(tmp_path, capsys):
  pytest.importorskip("captum")
  from profiling.benchmarks import multitarget_bench

  argv = "--conv onednn --models cnn --methods saliency --targets 2 --members 2 --batch 2"
  argv = argv.split() + ["--size", "16", "--repeats", "1", "--out", str(tmp_path / "mt.json")]
  payload = _bench_conv_onednn(multitarget_bench.main, argv, capsys)
  if payload is not None:
    assert payload["device"]["conv"] == "onednn"
    (row,) = payload["rows"]
    assert row["max_rel_diff"] < 1e-4 and row["captum_rel_diff"] < 1e-4, row


def test_trust_bench_runs_with_onednn_convolutions(tmp_path, capsys):
  pytest.importorskip("quantus")
  from profiling.benchmarks import trust_bench

  argv = "--conv onednn --batch 2 --repeats 1 --metrics pixel_flipping,max_sensitivity".split()
  payload = _bench_conv_onednn(trust_bench.main, argv + ["--out", str(tmp_path / "t.json")], capsys)
  if payload is not None:
    assert payload["device"]["conv"] == "onednn"
    assert [r["metric"] for r in payload["rows"]] == ["pixel_flipping", "max_sensitivity"]
    assert all(r["mtljax_per_s"] > 0 and r["quantus_per_s"] > 0 for r in payload["rows"])


def test_attribution_profile_puts_each_op_in_a_category(tmp_path):
  """The per-op profile of one Saliency call on each side: the convolutions are found (oneDNN's
  kernels with the library's counters, or XLA's), and so are Captum's."""
  pytest.importorskip("captum")
  from profiling.benchmarks import attribution_profile

  out = tmp_path / "profile.json"
  argv = "--models cnn --methods saliency --size 16 --batch 2 --repeats 1 --conv auto".split()
  attribution_profile.main(argv + ["--out", str(out)])
  (row,) = json.loads(out.read_text())["rows"]
  jax_ms, captum_ms = row["jax"]["ms"], row["captum"]["ms"]
  if ONEDNN_OFF:
    assert jax_ms["XLA convolution"] > 0 and "onednn" not in row["jax"]
  else:
    assert jax_ms["oneDNN fwd"] > 0 and jax_ms["oneDNN bwd_data"] > 0
    assert "oneDNN bwd_weights" not in jax_ms  # an input gradient: the kernel's is never computed
    assert row["jax"]["onednn"]["problems"] == 6 and row["jax"]["onednn"]["plan_misses"] == 0
  assert captum_ms["convolution (mkldnn)"] > 0


def test_attribution_crossover_times_both_strategies(tmp_path, capsys):
  """The measurement behind "auto": vmap and the loop timed on one case, and the share it picks
  by (a 3-conv CNN's parameters are a small share of its Saliency's work)."""
  from profiling.benchmarks import attribution_crossover

  argv = "--conv onednn --cases cnn:saliency:2 --members 2 --size 16 --repeats 1".split()
  payload = _bench_conv_onednn(
    attribution_crossover.main, argv + ["--out", str(tmp_path / "x.json")], capsys
  )
  if payload is None:
    return
  (row,) = payload["rows"]
  assert row["vmap_s"] > 0 and row["loop_s"] > 0 and 0 < row["param_share"] < 1
  assert row["auto_picks"] == ("vmap" if row["param_share"] >= 0.015 else "loop")
