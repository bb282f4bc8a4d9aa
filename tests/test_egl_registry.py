"""Explanation-guided training on the registries: a toy attribution method and a toy
explanation-loss kind, each one function and one registry entry, used by the train step (its
logged loss and its update checked against the same numbers computed by hand); an existing
registry method (Integrated Gradients) as the map of GRADIA, differentiated through to second
order; and methods a loss cannot train through rejected in one line naming the key."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtljax import objective
from mtljax.attribution import methods
from mtljax.data import annotations as ann
from mtljax.egl import losses, term
from mtljax.egl import maps as mp
from mtljax.errors import ConfigError
from mtljax.train import steps
from mtljax.train.state import init_state
from tests.test_egl import _batch, _config, _loss_fn, _Tiny

LAM = 0.7  # _config's λ


def gradient_squared(f, params, inputs):
  """The toy method: (∂f/∂x)² of every float leaf (unsigned)."""
  return jax.tree.map(jnp.square, methods.saliency(f, params, inputs, absolute=False))


def outside_mass(b: losses.Explained):
  """The toy kind: the mean over annotated examples of the class map's mass outside the mask,
  logged beside it as the mass inside."""
  smap = b.maps.class_map(b.score, b.params, b.x, b.labels)
  per = lambda m: jnp.sum(smap * m, axis=(1, 2))  # noqa: E731
  n = jnp.maximum(jnp.sum(b.flags), 1.0)
  return jnp.sum(per(1.0 - b.mask) * b.flags) / n, {"toy_inside": jnp.sum(per(b.mask) * b.flags)}


@pytest.fixture
def toys():
  methods.register("gradient_squared", methods.MethodSpec(gradient_squared, signed=False))
  losses.register("outside_mass", losses.LossKind(outside_mass, dilates_mask=False))
  try:
    yield
  finally:
    methods.METHODS.pop("gradient_squared")
    losses.KINDS.pop("outside_mass")


def _by_hand(params, batch):
  """The toy kind on the toy method, by hand: Σ_c (∂ z_y/∂x)² outside the mask, `[B]`."""
  model = _Tiny()
  x, y = batch["inputs"]["image"], batch["targets"]["cls"]

  def logit_y(xx):
    z = model.apply({"params": params}, {"image": xx})[0]["cls"]
    return jnp.sum(z[jnp.arange(len(y)), y])

  smap = jnp.sum(jax.grad(logit_y)(x) ** 2, axis=-1)
  mask = batch["meta"][ann.MASK]
  flags = batch["meta"][ann.MASK_PRESENT] * batch["valid"]
  out = jnp.sum(jnp.sum(smap * (1 - mask), axis=(1, 2)) * flags) / jnp.sum(flags)
  return out, jnp.sum(jnp.sum(smap * mask, axis=(1, 2)) * flags)


def test_a_toy_method_and_a_toy_loss_kind_drive_the_train_step(toys):
  batch = _batch(jnp.float32)
  config = _config("outside_mass", "gradient_squared")
  config.tasks.attr.weight = 0.0
  assert term.check_config(config) == []
  model, tx = _Tiny(), optax.sgd(0.05)
  state = init_state(model, tx, batch["inputs"], jax.random.key(0))
  batch = {**batch, "mask": {t: jnp.ones(4) for t in config.tasks}}
  batch["targets"] = {**batch["targets"], "attr": jnp.zeros((4, 2))}
  step = jax.jit(steps.make_train_step(model, tx, config, {}))
  new, m = step(state, batch, jax.random.key(1))
  want, inside = _by_hand(state["params"], batch)
  assert float(want) > 0
  np.testing.assert_allclose(m["loss_explanation"], LAM * want, rtol=1e-5)
  np.testing.assert_allclose(m["loss_toy_inside"], LAM * inside, rtol=1e-5)

  # The update is SGD on the task loss plus λ × the toy loss: the toy's own gradient (second
  # order, through the toy map) by hand is the difference to a step without it.
  plain = config.copy_and_resolve_references()
  plain.explanation_loss.kind = "none"
  base, _ = jax.jit(steps.make_train_step(model, tx, plain, {}))(state, batch, jax.random.key(1))
  g = jax.grad(lambda p: _by_hand(p, batch)[0])(state["params"])
  for a, b, gg in zip(*(jax.tree.leaves(t) for t in (new["params"], base["params"], g))):
    np.testing.assert_allclose(a - b, -0.05 * LAM * gg, rtol=1e-3, atol=1e-7)
  assert float(jnp.max(jnp.abs(g["conv"]["kernel"]))) > 1e-4


def test_integrated_gradients_is_the_map_of_gradia_to_second_order():
  """GRADIA on Integrated Gradients (4 riemann_middle steps from config.explain): the value is
  the L1 between each map |Σ_c IG| / max and the mask computed by hand, and the parameter
  gradient through IG matches a float64 finite difference."""
  with jax.enable_x64(True):
    batch = _batch(jnp.float64)
    config = _config("gradia", "integrated_gradients")
    config.explain = mp.default_maps("saliency").explain
    config.explain.ig_steps = 4
    model, loss, params = _loss_fn(config, batch)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    x, y = batch["inputs"]["image"], batch["targets"]["cls"]

    def logit_y(xx):
      z = model.apply({"params": params}, {"image": xx})[0]["cls"]
      return jnp.sum(z[jnp.arange(len(y)), y])

    alphas = (np.arange(4) + 0.5) / 4
    ig = x * sum(jax.grad(logit_y)(a * x) for a in alphas) / 4
    smap = jnp.abs(jnp.sum(ig, axis=-1))
    smap = smap / (jnp.max(smap, axis=(1, 2), keepdims=True) + 1e-8)
    per = jnp.mean(jnp.abs(smap - batch["meta"][ann.MASK]), axis=(1, 2))
    flags = batch["meta"][ann.MASK_PRESENT] * batch["valid"]
    assert float(loss(params)) == pytest.approx(LAM * float(jnp.sum(per * flags) / 2), rel=1e-9)

    grads = jax.jit(jax.grad(loss))(params)
    v = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(1).normal(size=p.shape)), params)
    eps = 1e-6
    shift = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, v)  # noqa: E731
    fd = (float(loss(shift(1.0))) - float(loss(shift(-1.0)))) / (2 * eps)
    an = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v)))
    assert an == pytest.approx(fd, rel=1e-5) and abs(an) > 1e-6


@pytest.mark.parametrize(
  "saliency,match",
  [
    ("lime", "saliency='lime': lime needs segments"),
    ("xrai", "saliency='xrai': xrai's attributions are not differentiable"),
    ("edges", "saliency='edges': edges's attributions are not differentiable"),
    ("deeplift", "saliency='deeplift': 'deeplift' is not an attribution method"),
    ("saliency@conv", "saliency='saliency@conv': saliency takes no @<layer>"),
    ("grad_cam", "saliency='grad_cam': grad_cam needs @<layer>"),
  ],
)
def test_a_map_no_loss_can_train_through_is_one_line_naming_the_key(saliency, match):
  problems = term.check_config(_config("gradia", saliency))
  assert len(problems) == 1 and "\n" not in problems[0]
  assert problems[0].startswith("config.explanation_loss.saliency=")
  with pytest.raises(ConfigError, match=match):
    objective.TERMS["explanation"](_config("gradia", saliency))


def test_the_registries_refuse_a_taken_name_and_an_unknown_kind():
  with pytest.raises(ValueError, match="'rrr' is already registered"):
    losses.register("rrr", losses.KINDS["rrr"])
  assert term.check_config(_config("lrp")) == [
    "config.explanation_loss.kind='lrp' is not one of ('none', 'rrr', 'gradia', 'res', 'megl')"
  ]
  assert term.check_config(_config("none", "lime")) == []
