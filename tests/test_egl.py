"""Explanation-guided training (mtljax/egl): each explanation loss's parameter gradient — taken
through the saliency map, second order — against a float64 finite difference; RRR against PyTorch
double backprop on a twin model; RRR on decoy digits learns the digit, not the decoy; and the
user's mistakes are one clear error."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtljax import configlib, objective
from mtljax.data import annotations as ann
from mtljax.data.source import DataError
from mtljax.egl import losses
from mtljax.egl import maps as sal
from mtljax.egl import term as _term  # noqa: F401 (registers the term)
from mtljax.egl.config import explanation_loss_config


class _Tiny(nn.Module):
  """conv3x3 → tanh → mean pool → a class head and a 2-attribute head (smooth: finite
  differences are exact up to O(ε²))."""

  @nn.compact
  def __call__(self, inputs, train=False):
    h = jnp.tanh(nn.Conv(3, (3, 3), name="conv")(inputs["image"]))
    g = jnp.concatenate([jnp.mean(h, axis=(1, 2)), jnp.max(h, axis=(1, 2))], -1)
    return {"cls": nn.Dense(3, name="cls")(g), "attr": nn.Dense(2, name="attr")(g)}, {}


def _config(kind, saliency="input_gradient", **extra):
  c = ml_collections.ConfigDict()
  c.data = {"name": "toy"}
  c.inputs = {"image": {"encoder": "small_cnn"}}
  c.tasks = {
    "cls": {"kind": "classification", "num_classes": 3, "weight": 1.0},
    "attr": {"kind": "multilabel", "num_classes": 2, "weight": 1.0},
  }
  c.objective = {"terms": ("tasks", "explanation")}
  c.explanation_loss = explanation_loss_config(task="cls", kind=kind, lam=0.7, saliency=saliency)
  for k, v in extra.items():
    c.explanation_loss[k] = v
  return c


def _batch(dtype, n=4, hw=6, seed=0):
  rng = np.random.default_rng(seed)
  mask = np.zeros((n, hw, hw))
  mask[:, 1:4, 2:5] = 1
  prior = mask + 0.1
  return {
    "inputs": {"image": jnp.asarray(rng.normal(size=(n, hw, hw, 2)), dtype)},
    "targets": {"cls": jnp.asarray([0, 1, 2, 1])},
    "valid": jnp.asarray([1.0, 1, 1, 0], dtype),
    "meta": {
      ann.MASK: jnp.asarray(mask, dtype),
      ann.MASK_PRESENT: jnp.asarray([1.0, 0, 1, 1], dtype),
      ann.PRIOR: jnp.asarray(prior / prior.sum((1, 2), keepdims=True), dtype),
      ann.RATIONALE: jnp.asarray([[1.0, 0], [1, 1], [0, 0], [0, 1]], dtype),
      ann.RATIONALE_PRESENT: jnp.asarray([0.0, 1, 0, 1], dtype),
      ann.RATIONALE_REGION: jnp.asarray(np.roll(mask, 1, axis=2), dtype),
    },
  }


def _loss_fn(config, batch):
  model = _Tiny()
  term = objective.TERMS["explanation"](config)

  def apply(p, inputs, *, train=True, rng=None, batch_stats=None):
    return model.apply({"params": p}, inputs)

  def loss(params):
    ctx = types.SimpleNamespace(params=params, batch=batch, apply=apply)
    return term(ctx)[0]

  params = model.init(jax.random.key(0), batch["inputs"])["params"]
  return model, loss, params


CASES = [
  ("rrr", "input_gradient", {}),
  ("rrr", "input_gradient", {"rrr_output": "true_log_prob"}),
  ("rrr", "input_gradient", {"rrr_output": "centred_log_probs"}),
  ("rrr", "gradcam@conv", {}),
  ("rrr", "input_gradient", {"rrr_output": "centred_log_probs", "rrr_share": True}),
  ("rrr", "gradcam@conv", {"rrr_share": True}),
  ("rrr", "input_gradient", {"rrr_output": "centred_log_probs", "rrr_pool": 2}),
  ("rrr", "gradcam@conv", {"rrr_output": "centred_log_probs", "rrr_share": True, "rrr_pool": 2}),
  ("rrr", "input_gradient", {"rrr_output": "centred_log_probs", "rrr_pool": 4, "rrr_share": True}),
  ("gradia", "input_gradient", {}),
  ("gradia", "gradcam@conv", {}),
  ("res", "input_x_gradient", {}),
  ("megl", "input_gradient", {"attribute_task": "attr"}),
  ("megl", "gradcam@conv", {}),
  ("megl", "gradcam@conv", {"rationale_target": "part_regions"}),
]


@pytest.mark.parametrize("kind,saliency,extra", CASES)
def test_gradient_through_the_saliency_matches_finite_differences(
  kind, saliency, extra, monkeypatch
):
  with jax.enable_x64(True):
    batch = _batch(jnp.float64)
    _, loss, params = _loss_fn(_config(kind, saliency, **extra), batch)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    if extra.get("attribute_task"):
      # MEGL's rationale target (the attributes' own maps) is a stop-gradient target: the
      # finite difference holds it at its value at `params`, as the gradient does.
      union = losses.attribute_union
      frozen = {}

      def fixed(*args):
        frozen.setdefault("t", union(*args))
        return frozen["t"]

      monkeypatch.setattr(losses, "attribute_union", fixed)
      loss(params)
      assert float(jnp.max(frozen["t"])) > 0
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value)) and float(value) > 0
    rng = np.random.default_rng(1)
    v = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    eps = 1e-6
    shift = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, v)  # noqa: E731
    fd = (float(loss(shift(1.0))) - float(loss(shift(-1.0)))) / (2 * eps)
    if True:
      an = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v)))
      assert an == pytest.approx(fd, rel=1e-5, abs=1e-9), (kind, saliency)


def test_the_annotation_flag_switches_the_term_off():
  batch = _batch(jnp.float32)
  batch["meta"][ann.MASK_PRESENT] = jnp.zeros(4)
  for kind in ("rrr", "gradia"):
    _, loss, params = _loss_fn(_config(kind), batch)
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert float(value) == 0.0 and all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
  "output,share,pool",
  [("sum_log_probs", False, 1), ("true_log_prob", False, 1), ("centred_log_probs", False, 1),
   ("centred_log_probs", True, 1), ("true_log_prob", True, 1), ("centred_log_probs", False, 2),
   ("centred_log_probs", True, 3)],
)  # fmt: skip
def test_rrr_matches_pytorch_double_backprop(output, share, pool):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  n, hw, k = 5, 4, 3
  x = rng.normal(size=(n, hw, hw, 1))
  w1, b1 = rng.normal(size=(hw * hw, 7)) * 0.5, rng.normal(size=7) * 0.1
  w2, b2 = rng.normal(size=(7, k)) * 0.5, rng.normal(size=k) * 0.1
  mask = (rng.uniform(size=(n, hw, hw)) > 0.5).astype(np.float64)
  flags = np.array([1.0, 1, 0, 1, 1])

  def score(p, xx):
    h = jnp.tanh(xx.reshape(xx.shape[0], -1) @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]

  with jax.enable_x64(True):
    params = {k_: jnp.asarray(v) for k_, v in dict(w1=w1, b1=b1, w2=w2, b2=b2).items()}
    labels = jnp.asarray([0, 2, 1, 1, 0])
    g_jax = jax.grad(
      lambda p: losses.rrr(
        score,
        p,
        jnp.asarray(x),
        mask,
        flags,
        labels=labels,
        output=output,
        share=share,
        pool=pool,
      )  # fmt: skip
    )(params)

  tp = {
    k_: torch.tensor(v, requires_grad=True) for k_, v in dict(w1=w1, b1=b1, w2=w2, b2=b2).items()
  }
  tx = torch.tensor(x, requires_grad=True)
  logp = torch.log_softmax(
    torch.tanh(tx.reshape(n, -1) @ tp["w1"] + tp["b1"]) @ tp["w2"] + tp["b2"], -1
  )
  if output == "true_log_prob":
    picked = [logp.gather(1, torch.tensor([[0], [2], [1], [1], [0]]))]
  elif output == "centred_log_probs":
    picked = [logp[:, c] - logp.mean(-1) for c in range(k)]
  else:
    picked = [logp]

  def blocks(g):  # sums over pool × pool blocks: zero-pad to a multiple, reshape, sum
    pad = -hw % pool
    g = torch.nn.functional.pad(g, (0, 0, 0, pad, 0, pad))
    m = (hw + pad) // pool
    return g.reshape(n, m, pool, m, pool, 1).sum((2, 4))

  per = total = 0
  for out in picked:
    (gx,) = torch.autograd.grad(out.sum(), tx, create_graph=True)
    per = per + (blocks((1 - torch.tensor(mask))[..., None] * gx) ** 2).sum((1, 2, 3))
    total = total + (blocks(gx) ** 2).sum((1, 2, 3))
  if share:
    per = per / (total + losses.SHARE_EPS)
  loss = (per * torch.tensor(flags)).sum() / flags.sum()
  loss.backward()
  for name in tp:
    np.testing.assert_allclose(
      np.asarray(g_jax[name]), tp[name].grad.numpy(), rtol=1e-9, atol=1e-12
    )


def test_rrr_share_is_the_squared_gradient_share_outside_the_mask_at_any_logit_scale():
  """Linear logits z = W·vec(x): the centred input gradients are W_k − mean_j W_j, so the share
  outside M is computed by hand; scaling every logit by 10 multiplies the plain penalty by 100
  (the escape a shrinking model takes) and leaves the share as it was."""
  rng = np.random.default_rng(3)
  w = rng.normal(size=(16, 3))
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 1)))
  mask = jnp.asarray(rng.uniform(size=(2, 4, 4)) > 0.6, jnp.float32)
  flags, labels = jnp.ones(2), jnp.asarray([0, 2])
  score = lambda p, xx: xx.reshape(xx.shape[0], -1) @ (p * w)  # noqa: E731
  g2 = ((w - w.mean(1, keepdims=True)) ** 2).sum(1).reshape(4, 4)  # Σ_k, per pixel
  out = np.asarray(1 - mask)
  by_hand = np.mean([(out[b] * g2).sum() / g2.sum() for b in range(2)])
  pen = lambda scale, share: float(  # noqa: E731
    losses.rrr(
      score, scale, x, mask, flags, labels=labels, output="centred_log_probs", share=share
    )  # fmt: skip
  )
  assert pen(1.0, True) == pytest.approx(by_hand, rel=1e-5)
  assert pen(10.0, True) == pytest.approx(by_hand, rel=1e-5)
  assert pen(10.0, False) == pytest.approx(100 * pen(1.0, False), rel=1e-5)
  assert 0 < by_hand < 1


def test_centred_gradcam_matches_captum_layer_gradcam_of_the_centred_logits():
  """`saliency.centred_gradcam` against Captum's LayerGradCam (no ReLU) of a PyTorch twin of
  _Tiny whose output is the centred logits z − z̄, one target class at a time."""
  torch = pytest.importorskip("torch")
  captum_attr = pytest.importorskip("captum.attr")

  with jax.enable_x64(True):
    batch = _batch(jnp.float64)
    model = _Tiny()
    params = model.init(jax.random.key(0), batch["inputs"])["params"]
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    score = lambda p, xx: model.apply({"params": p}, {"image": xx})[0]["cls"]  # noqa: E731
    ours = np.asarray(sal.centred_gradcam(score, params, batch["inputs"]["image"], "conv"))

  class Twin(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
      self.cls = torch.nn.Linear(6, 3).double()

    def forward(self, x):
      h = torch.tanh(self.conv(x))
      z = self.cls(torch.cat([h.mean((2, 3)), h.amax((2, 3))], -1))
      return z - z.mean(-1, keepdim=True)

  net = Twin()
  with torch.no_grad():
    net.conv.weight.copy_(torch.tensor(np.asarray(params["conv"]["kernel"]).transpose(3, 2, 0, 1)))
    net.conv.bias.copy_(torch.tensor(np.asarray(params["conv"]["bias"])))
    net.cls.weight.copy_(torch.tensor(np.asarray(params["cls"]["kernel"]).T))
    net.cls.bias.copy_(torch.tensor(np.asarray(params["cls"]["bias"])))
  x = torch.tensor(np.asarray(batch["inputs"]["image"]).transpose(0, 3, 1, 2))
  gc = captum_attr.LayerGradCam(net, net.conv)
  theirs = np.stack(
    [gc.attribute(x, target=k, relu_attributions=False)[:, 0].detach().numpy() for k in range(3)]
  )
  assert ours.shape == theirs.shape == (3, 4, 6, 6)
  assert np.abs(theirs).max() > 1e-3 and (theirs < 0).any()  # signed: evidence against, too
  np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_rrr_pool_weighs_a_patch_read_as_its_mean_colour_as_one_input():
  """Logits z = v · mean(x over a 4×4 patch): each of its 16 pixels has the centred gradient
  (v − v̄)/16, so per pixel the patch costs c/16 (c = Σ_k (v_k − v̄)²), 1/16 of what a single
  pixel read with the same weight costs; summed over 4×4 blocks first (rrr_pool=4) it costs c.
  Blocks that straddle the patch and the mask split as the sums say (by hand)."""
  v = jnp.asarray([1.0, -2.0, 0.5])
  c = float(jnp.sum((v - jnp.mean(v)) ** 2))
  x = jnp.zeros((1, 8, 8, 1))
  flags, labels = jnp.ones(1), jnp.asarray([0])

  def score(p, xx, rows=slice(0, 4), cols=slice(0, 4)):
    return jnp.mean(xx[:, rows, cols, 0], axis=(1, 2))[:, None] * (p * v)

  pen = lambda sc, mask, pool: float(  # noqa: E731
    losses.rrr(sc, 1.0, x, mask, flags, labels=labels, output="centred_log_probs", pool=pool)
  )
  none = jnp.zeros((1, 8, 8))
  assert pen(score, none, 1) == pytest.approx(c / 16, rel=1e-6)
  assert pen(score, none, 4) == pytest.approx(c, rel=1e-6)
  # the patch at rows 2..5: two 4×4 blocks hold 8 pixels each: 2 · (8/16)² c = c/2
  shifted = lambda p, xx: score(p, xx, rows=slice(2, 6))  # noqa: E731
  assert pen(shifted, none, 4) == pytest.approx(c / 2, rel=1e-6)
  # 3 × 3 blocks on 8 px (the last ones partial): rows 0..2 / 3..5 hold 3 / 1 patch rows, cols
  # 0..2 / 3..5 hold 3 / 1: block sums 9, 3, 3, 1 sixteenths
  assert pen(score, none, 3) == pytest.approx(c * (81 + 9 + 9 + 1) / 256, rel=1e-6)
  # the mask covers the patch's left half: the blocks see only the right half's 8 pixels
  half = none.at[:, :, :2].set(1.0)
  assert pen(score, half, 4) == pytest.approx(c / 4, rel=1e-6)
  assert pen(score, half, 1) == pytest.approx(c / 32, rel=1e-6)


def test_each_rrr_output_is_blind_where_its_docstring_says_and_only_there(monkeypatch):
  """Logits z = s(x)·v + t·u depend on the input through s = Σx. At x = 0 with t = 0, p is uniform:
  the published Σ_k ∇ log p_k is 0 there (the escape the RRR runs took on shortcut CUB: they
  stayed unconfident); with t large the own class is certain and ∇ log p_y ≈ 0. The centred
  log-probabilities see the input's effect in both, with the value computed by hand."""
  v, u = jnp.asarray([1.0, -1.0, 0.5]), jnp.asarray([1.0, 0.0, 0.0])
  x, mask = jnp.zeros((2, 3, 3, 1)), jnp.zeros((2, 3, 3))
  flags, labels = jnp.ones(2), jnp.asarray([0, 0])
  # by hand: ∂(z_k − z̄)/∂x_i = v_k − mean(v) for each of the 9 pixels, summed over k
  centred = 9 * float(jnp.sum((v - jnp.mean(v)) ** 2))
  for t, blind in ((0.0, "sum_log_probs"), (40.0, "true_log_prob")):
    score = lambda p, xx: p * jnp.sum(xx, axis=(1, 2, 3))[:, None] * v + t * u  # noqa: E731
    pen = {
      o: float(losses.rrr(score, 1.0, x, mask, flags, labels=labels, output=o))
      for o in losses.RRR_OUTPUTS
    }
    assert pen[blind] == pytest.approx(0.0, abs=1e-12), (t, pen)
    assert all(pen[o] > 0.5 for o in pen if o != blind), (t, pen)
    assert pen["centred_log_probs"] == pytest.approx(centred, rel=1e-6)
  # many classes: the K input gradients are one vmapped VJP instead of an unrolled loop
  monkeypatch.setattr(sal, "UNROLL_CLASSES", 0)
  vmapped = losses.rrr(score, 1.0, x, mask, flags, labels=labels, output="centred_log_probs")
  assert float(vmapped) == pytest.approx(centred, rel=1e-6)


def test_megl_part_regions_supervise_the_rationale_examples_towards_their_region():

  batch = _batch(jnp.float32)
  c = _config("megl", "gradcam@conv", rationale_target="part_regions", megl_consistency=0.0)
  model, loss, params = _loss_fn(c, batch)
  meta = batch["meta"]

  def score(p, xx):
    return model.apply({"params": p}, {"image": xx})[0]["cls"]

  x, y = batch["inputs"]["image"], batch["targets"]["cls"]
  smap = sal.class_map(score, params, x, y, c.explanation_loss.saliency)
  # Rows 0, 2 (mask; row 3 is padding): L1 to the mask; row 1 (rationale, no mask): to its region.
  per = np.abs(np.asarray(sal.normalise(smap)) - np.asarray(meta[ann.MASK])).mean((1, 2))
  per_r = np.abs(np.asarray(sal.normalise(smap)) - np.asarray(meta[ann.RATIONALE_REGION]))
  want = 0.7 * (per[0] + per_r[1].mean() + per[2]) / 3
  assert float(loss(params)) == pytest.approx(want, rel=1e-5)
  del batch["meta"][ann.RATIONALE_REGION]
  with pytest.raises(ValueError, match="rationale_target='part_regions'.*no meta/expl_rationale_r"):
    loss(params)
  with pytest.raises(configlib.ConfigError, match="rationale_target='words'"):
    objective.TERMS["explanation"](_config("megl", rationale_target="words"))


def test_mask_dilation_grows_each_mask_before_the_loss():
  from scipy import ndimage

  batch = _batch(jnp.float32)
  grown = {**batch, "meta": dict(batch["meta"])}
  m = np.asarray(batch["meta"][ann.MASK])
  grown["meta"][ann.MASK] = jnp.asarray(ndimage.maximum_filter(m, size=(1, 3, 3), mode="constant"))
  for kind in ("rrr", "gradia"):
    _, loss_d, params = _loss_fn(_config(kind, mask_dilation=1), batch)
    _, loss_g, _ = _loss_fn(_config(kind), grown)
    assert float(loss_d(params)) == pytest.approx(float(loss_g(params)), rel=1e-6)
    assert float(loss_d(params)) != pytest.approx(float(_loss_fn(_config(kind), batch)[1](params)))


def test_bad_config_is_one_clear_error():
  with pytest.raises(configlib.ConfigError, match="modality='depth'.*no such input"):
    objective.TERMS["explanation"](_config("rrr", modality="depth"))
  with pytest.raises(configlib.ConfigError, match="saliency.*gradcam needs @<layer>"):
    objective.TERMS["explanation"](_config("gradia", saliency="gradcam"))
  with pytest.raises(configlib.ConfigError, match="kind='lrp'"):
    objective.TERMS["explanation"](_config("lrp"))
  with pytest.raises(configlib.ConfigError, match="rrr_output='max'.*sum_log_probs"):
    objective.TERMS["explanation"](_config("rrr", rrr_output="max"))
  for pool in (0, -1):
    with pytest.raises(configlib.ConfigError, match=f"rrr_pool={pool}.*whole number"):
      objective.TERMS["explanation"](_config("rrr", rrr_pool=pool))
  batch = _batch(jnp.float32)
  _, loss, params = _loss_fn(_config("gradia", saliency="gradcam@nope"), batch)
  with pytest.raises(configlib.ConfigError, match="gradcam@nope.*no module at path 'nope'.*conv"):
    loss(params)
  bad = _batch(jnp.float32)
  bad["meta"][ann.MASK] = jnp.zeros((4, 5, 5))
  _, loss, params = _loss_fn(_config("rrr"), bad)
  with pytest.raises(DataError, match=r"meta/expl_mask is \(5, 5\), not the image's \(6, 6\)"):
    loss(params)


def test_rrr_on_decoy_digits_learns_the_digit_not_the_decoy(tmp_path):
  from configs import digits
  from mtljax.sweeps import egl

  out = {}
  for kind in ("none", "rrr"):
    c = digits.get_config("decoy,tiny")
    c.data.synthetic.dir = str(tmp_path / "data")
    c.data.synthetic.num_train = 600
    c.train.num_epochs = 20
    c.explanation_loss.kind = kind
    rows = egl.compare(c, [{"label": kind, "kind": kind, "fraction": 1.0}], str(tmp_path))
    out[kind] = rows[0]["metrics"]
  plain, rrr = out["none"], out["rrr"]
  # The decoy fools the plain model on the decoy-free test split; RRR ignores it.
  assert rrr["accuracy"][0] > plain["accuracy"][0] + 0.15, (plain, rrr)
  assert rrr["accuracy"][0] > 0.85
  assert rrr["decoy_share"][0] < 0.3 * plain["decoy_share"][0]
  assert (tmp_path / "egl_comparison.md").read_text().count("| rrr |") == 1
  # On the decoyed validation split (no training: the workdirs are reused), repainting the decoy
  # in another example's colour costs the plain model more accuracy than RRR (the test-free
  # signal that chooses λ).
  drop = {}
  for kind in ("none", "rrr"):
    c.explanation_loss.kind = kind
    (row,) = egl.compare(
      c, [{"label": kind, "kind": kind, "fraction": 1.0}], str(tmp_path), split="val"
    )
    drop[kind] = row["metrics"]["accuracy"][0] - row["metrics"]["swapped_accuracy"][0]
  assert drop["none"] > drop["rrr"] + 0.1, drop
  assert (tmp_path / "egl_comparison_val.md").is_file()
  # The per-example arrays [E, N] (profiling/experiments/egl_diagnose.py --annotated) average to
  # the row's.
  m = egl.score_workdir(c, str(tmp_path / "rrr"), "val")
  n = len(m["index"])
  assert m["correct_examples"].shape == m["swapped_correct_examples"].shape == (1, n)
  np.testing.assert_allclose(m["correct_examples"].mean(1), m["accuracy"])
  np.testing.assert_allclose(m["swapped_correct_examples"].mean(1), m["swapped_accuracy"])
  np.testing.assert_allclose(m["decoy_share_examples"].mean(1), m["decoy_share"], rtol=1e-6)


@pytest.fixture(scope="module")
def shortcut_root(tmp_path_factory):
  from mtljax.data.attributes import shortcut

  root = tmp_path_factory.mktemp("shortcut")
  return shortcut.write_shortcut_cub(
    root, num_train=24, num_test=8, seed=0, image_size=16, num_classes=4, flip=0.0
  )


def test_shortcut_reader_gives_annotations_and_rationales(shortcut_root):
  from mtljax.data.attributes import shortcut

  src = shortcut.ShortcutCUBSource(
    shortcut_root, "train", image_size=16, val_fraction=0.0, mask_fraction=0.5,
    rationale_fraction=1.0,
  )  # fmt: skip
  ex = [src[i]["meta"] for i in range(len(src))]
  assert sum(float(m[ann.MASK_PRESENT]) for m in ex) == round(0.5 * len(src))
  rel, decoy = src.explanation_regions()
  assert rel.any() and decoy.any() and not (rel & decoy).all()
  # The captions (generated from the planted attributes) name exactly the labelled attributes.
  labels = src.label_arrays()["targets"]["attributes"]
  np.testing.assert_array_equal(np.stack([m[ann.RATIONALE] for m in ex]), labels)
  assert all(m[ann.MASK].shape == (16, 16) for m in ex)
  # Each rationale's part regions: discs around the named parts' keypoints, covering most of the
  # named (here: all present) attributes' masks, none of the decoy's square.
  parts = np.stack([m[ann.RATIONALE_REGION] for m in ex]) > 0
  assert parts.any((1, 2)).all()
  assert (parts & rel).sum() > 0.7 * rel.sum() and (parts & decoy).sum() < 0.1 * decoy.sum()
  # 4 classes, flip 0: every image's attributes are exactly its class's prototype.
  classes = src.label_arrays()["targets"]["class"]
  assert set(classes.tolist()) <= set(range(4))
  for c in set(classes.tolist()):
    assert len({tuple(r) for r in labels[classes == c].tolist()}) == 1
  with pytest.raises(ValueError, match="num_classes=13"):
    shortcut.write_shortcut_cub(
      shortcut_root.parent / "x", num_train=2, num_test=1, seed=0, image_size=8, num_classes=13
    )


def test_shortcut_reader_bad_rationales_are_data_errors(shortcut_root, tmp_path):
  import shutil

  from mtljax.data.attributes import shortcut

  root = tmp_path / "copy"
  shutil.copytree(shortcut_root, root)
  captions = sorted((root / "text_c10").rglob("*.txt"))
  captions[0].write_text("red bill, purple bill\n")
  with pytest.raises(DataError, match="rationale word 'purple bill' is not an attribute"):
    shortcut.ShortcutCUBSource(root, "train", image_size=16, val_fraction=0.0)
  captions[0].write_text("red bill\n")
  (captions[0].parent / "Nobody_0000.txt").write_text("red bill\n")
  with pytest.raises(DataError, match="a rationale for an unknown image"):
    shortcut.ShortcutCUBSource(root, "train", image_size=16, val_fraction=0.0)
  (captions[0].parent / "Nobody_0000.txt").unlink()
  # A mask of another size than its image: the reader names the file.
  from PIL import Image

  mask = sorted((root / "CUB_200_2011" / "attribute_masks").rglob("*.png"))[0]
  Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask)
  with pytest.raises(DataError, match=mask.name):
    shortcut.ShortcutCUBSource(root, "train", image_size=16, val_fraction=0.0)


def test_shortcut_mask_regions_box_and_all_but_decoy(shortcut_root, tmp_path):
  """`mask_region="box"`: each annotated example's mask is its bird's box from
  bounding_boxes.txt (rescaled here by hand), holding the present attributes' masks;
  `"all_but_decoy"`: the complement of the decoy square. A bad value, a missing box line or
  missing decoy masks is one DataError naming the key or the file."""
  import shutil

  from PIL import Image

  from mtljax.data.attributes import shortcut

  src = shortcut.ShortcutCUBSource(
    shortcut_root, "train", image_size=16, val_fraction=0.0, mask_fraction=1.0,
    mask_region="box",
  )  # fmt: skip
  base = shortcut_root / "CUB_200_2011"
  paths = dict(ln.split() for ln in (base / "images.txt").read_text().splitlines())
  by_path = {p: i for i, p in paths.items()}
  boxes = {
    r[0]: [float(v) for v in r[1:]]
    for r in map(str.split, (base / "bounding_boxes.txt").read_text().splitlines())
  }
  rel, decoy = src.explanation_regions()
  for i in range(len(src)):
    m = src[i]["meta"][ann.MASK] > 0
    x, y, w, h = boxes[by_path[src.names[i]]]
    iw, ih = Image.open(base / "images" / src.names[i]).size
    ys, xs = np.nonzero(m)
    assert (
      xs.min() == int(np.floor(x * 16 / iw)) and xs.max() == int(np.ceil((x + w) * 16 / iw)) - 1
    )
    assert (
      ys.min() == int(np.floor(y * 16 / ih)) and ys.max() == int(np.ceil((y + h) * 16 / ih)) - 1
    )
    assert m.sum() == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)  # a filled rectangle
    assert (rel[i] & ~m).sum() <= 2  # the parts are inside the bird's box (up to resizing)
  boxes_all = np.stack([src[i]["meta"][ann.MASK] > 0 for i in range(len(src))])
  assert (boxes_all & decoy).sum() < 0.3 * decoy.sum()  # the decoy is mostly outside
  # Scoring keeps the attributes' region whatever the training masks are.
  attr = shortcut.ShortcutCUBSource(shortcut_root, "train", image_size=16, val_fraction=0.0)
  np.testing.assert_array_equal(attr.explanation_regions()[0], rel)
  # "all_but_decoy": the annotation marks the decoy square as the irrelevant region.
  marked = shortcut.ShortcutCUBSource(
    shortcut_root, "train", image_size=16, val_fraction=0.0, mask_fraction=1.0,
    mask_region="all_but_decoy",
  )  # fmt: skip
  got = np.stack([marked[i]["meta"][ann.MASK] > 0 for i in range(len(marked))])
  np.testing.assert_array_equal(got, ~decoy)
  with pytest.raises(DataError, match=r"data.mask_region='bird': expected one of attributes, "):
    shortcut.ShortcutCUBSource(shortcut_root, "train", image_size=16, mask_region="bird")
  root = tmp_path / "copy"
  shutil.copytree(shortcut_root, root)
  lines = (root / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()
  first = src.names[0]
  kept = [ln for ln in lines if ln.split()[0] != by_path[first]]
  (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(kept) + "\n")
  with pytest.raises(DataError, match=rf"bounding_boxes.txt: no box for image '{first}'"):
    shortcut.ShortcutCUBSource(root, "train", image_size=16, val_fraction=0.0, mask_region="box")
  shutil.rmtree(root / "CUB_200_2011" / "shortcut_masks")  # e.g. the real CUB: no decoy masks
  with pytest.raises(DataError, match=r"shortcut_masks/.*\.png: no such file; data.mask_region="):
    shortcut.ShortcutCUBSource(
      root, "train", image_size=16, val_fraction=0.0, mask_region="all_but_decoy"
    )
