"""Explanation-guided training: RRR, GRADIA, RES and MEGL as one objective term, "explanation".

The term is registered in `mtljax.objective.TERMS` (imported by the train step) and configured by
`config.explanation_loss` (`mtljax/egl/config.py `explanation_loss_config``); a config names it in
`config.objective.terms`. With `kind="none"` it adds nothing. Every loss is a function of the
params *through* a saliency map (`mtljax.egl.saliency`), so the step's `jax.value_and_grad`
differentiates it to second order; it is jitted, vmapped over ensemble members and sharded over
the mesh with the rest of the step. Each example's annotations and their "present" flags come in
`batch["meta"]` (`mtljax.data.annotations`); an example without a mask (or rationale) adds nothing
to the supervised part, and padding rows / an ensemble member's left-out rows (`valid` 0) add
nothing at all. Losses (per example b, M its mask, S its class map, Ŝ = S / max S):

  rrr     Ross et al. 2017: Σ_{h,w,c} ((1 − M) ⊙ ∂ₓ Σ_k log p_k)²  (input_gradient), or the class
          map squared outside M (other saliencies); mean over annotated examples. `rrr_output`
          picks what is differentiated: "sum_log_probs" (Σ_k log p_k, the published form),
          "true_log_prob" (log p_y) or "centred_log_probs" (each log p_k − mean_j log p_j,
          squared gradients summed over k); why: `saliency.log_prob_gradient`. With Grad-CAM,
          "centred_log_probs" takes the K signed maps of z_k − z̄ (`saliency.centred_gradcam`:
          evidence for and against every class), the others the true class's ReLU map. `rrr_share`:
          divided by the same sum without (1 − M), the share of the squared map outside M
          (scale-free: the plain sum also falls when every logit shrinks). `rrr_pool` p > 1:
          (1 − M) ⊙ ∂ₓ is summed over p × p blocks before it is squared (the gradient of a
          uniform change of each block outside M: a patch read as its mean colour has per-pixel
          gradients 1/n of its own, squares 1/n², so per pixel its n pixels weigh 1/n of it)
  gradia  mean_{h,w} |Ŝ − M|  (L1 between the normalised map of the true class and the mask)
  res     robust GRADIA (Gao et al. 2022, our reading): T = tanh(β·Ŝ) soft-thresholded; outside
          the mask dilated by `res_slack` pixels T should be 0, inside M it should reach
          `res_threshold` (hinge); the boundary band is free (inaccurate boundaries)
  megl    (a) supervision: the GRADIA L1 towards M where a mask is given, else, where a textual
          rationale names attributes of `attribute_task`, towards the union (max) of those
          attributes' own normalised saliency maps from their heads (stop-gradient target;
          `rationale_target="attribute_maps"`), or towards their annotated part regions
          (`"part_regions"`: the reader's `expl_rationale_region`, discs around the named parts'
          keypoints);
          (b) consistency: KL(P_b ‖ Q_{y_b}) of every valid example's map distribution P to its
          class's dataset-level pattern Q (`expl_prior`: the mean annotated mask of the class),
          weighted by `megl_consistency`

`mask_dilation` > 0 grows every mask by that many pixels before rrr, gradia and megl use it (a
tolerance at the annotation's boundary; RES has its own `res_slack`). All are multiplied by `lam`.
Logged as `loss_explanation` (+ `loss_explanation_consistency`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import mtljax.data.annotations as ann  # by path: mtljax.data.annotations is __future__'s
from mtljax import objective, tasks
from mtljax.egl import saliency as sal
from mtljax.errors import ConfigError

LOSS_KINDS = ("none", "rrr", "gradia", "res", "megl")
RATIONALE_TARGETS = ("attribute_maps", "part_regions")
RRR_OUTPUTS = ("sum_log_probs", "true_log_prob", "centred_log_probs")
#: Added to the denominator of RRR's share form (a map that is 0 everywhere has share 0).
SHARE_EPS = 1e-12


def _error(msg: str):
  return ConfigError(msg)


def check_config(config) -> None:
  """Raise ConfigError naming the `config.explanation_loss` key that cannot work."""
  e = config.get("explanation_loss", None)
  if not e or e.kind == "none":
    return
  key = "config.explanation_loss"
  if e.kind not in LOSS_KINDS:
    raise _error(f"{key}.kind={e.kind!r} is not one of {LOSS_KINDS}")
  try:
    sal.parse(e.saliency)
  except ValueError as err:
    raise _error(f"{key}.saliency: {err}") from None
  if e.modality not in config.inputs:
    raise _error(
      f"{key}.modality={e.modality!r}: the model has no such input (inputs: "
      f"{sorted(config.inputs)}); an explanation loss needs an image input"
    )
  task = config.tasks.get(e.task)
  kind = tasks.KINDS.get(task.kind) if task is not None else None
  if kind is None or kind.target != tasks.CLASS or kind.dense:  # one class per example
    raise _error(f"{key}.task={e.task!r} must name a classification task of config.tasks")
  attr = e.get("attribute_task", "")
  if attr and attr not in config.tasks:
    raise _error(f"{key}.attribute_task={attr!r} is not one of the tasks {sorted(config.tasks)}")
  if e.get("saliency_mode", "train") not in ("eval", "train"):
    raise _error(f"{key}.saliency_mode={e.saliency_mode!r} is not 'eval' or 'train'")
  if e.get("rationale_target", "attribute_maps") not in RATIONALE_TARGETS:
    raise _error(f"{key}.rationale_target={e.rationale_target!r} is not one of {RATIONALE_TARGETS}")
  if e.get("rrr_output", "sum_log_probs") not in RRR_OUTPUTS:
    raise _error(f"{key}.rrr_output={e.rrr_output!r} is not one of {RRR_OUTPUTS}")
  pool = e.get("rrr_pool", 1)
  if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
    raise _error(f"{key}.rrr_pool={pool!r} must be a whole number of pixels ≥ 1 (1 = per pixel)")
  if not 0.0 <= float(e.mask_fraction) <= 1.0:
    raise _error(f"{key}.mask_fraction={e.mask_fraction!r} must be in [0, 1]")
  if "explanation" not in tuple(config.get("objective", {}).get("terms", ())):
    raise _error(f"{key}.kind={e.kind!r} needs 'explanation' in config.objective.terms")


def objective_errors():
  from mtljax.data.source import DataError

  return (ConfigError, DataError)


def _score(ctx, task, modality, train: bool = True):
  """The task's logits as a function of (params, image). `train=True` (`saliency_mode="train"`,
  the default): the task loss's forward pass (BatchNorm batch statistics, dropout), so the batch
  statistics couple the examples (∂/∂x_b of Σ_b' log p(x_b') picks up the other examples' terms);
  `train=False`: running statistics, no dropout, each example's map a function of that example
  alone (the map the evaluation scores)."""

  def score(params, x):
    outputs, _ = ctx.apply(params, {**ctx.batch["inputs"], modality: x}, train=train)
    return outputs[task]

  return score


def _mean_over(values, weights):
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _check_mask(mask, x, key):
  from mtljax.data.source import DataError

  if mask.shape[1:] != x.shape[1:3]:
    raise DataError(
      f"config.explanation_loss: the batch's meta/{key} is {mask.shape[1:]}, not the image's "
      f"{x.shape[1:3]}: a mask must have its image's size"
    )


def _sum_pool(v, pool: int):
  """Sums of `v [N, B, H, W, C]` over non-overlapping pool × pool blocks of (H, W); the last
  block of a side that `pool` does not divide is the partial one (zero-padded)."""
  if pool <= 1:
    return v
  h, w = v.shape[2:4]
  pad = ((0, 0), (0, 0), (0, -h % pool), (0, -w % pool), (0, 0))
  return jax.lax.reduce_window(
    jnp.pad(v, pad), 0.0, jax.lax.add, (1, 1, pool, pool, 1), (1, 1, pool, pool, 1), "VALID"
  )


def rrr(
  score, params, x, mask, flags, saliency="input_gradient", labels=None, output="sum_log_probs",
  share=False, pool=1,
):  # fmt: skip
  """The RRR penalty, averaged over the flagged examples (module docstring); `share`: each
  example's penalty divided by the same sum without the mask (its share outside, in [0, 1]);
  `pool` > 1: the signed map (1 − M) ⊙ ∂ₓ is summed over pool × pool blocks before it is
  squared — the gradient with respect to each block's uniform change outside M."""
  kind, layer = sal.parse(saliency)
  if kind == "input_gradient":
    g = sal.log_prob_gradient(score, params, x, labels, output).reshape((-1, *x.shape))
  elif kind == "gradcam" and output == "centred_log_probs":  # [K, B, H, W, 1], signed
    g = sal.centred_gradcam(score, params, x, layer)[..., None]
  else:  # [1, B, H, W, 1]
    g = sal.class_map(score, params, x, labels, saliency)[None, ..., None]
  outside = _sum_pool((1.0 - mask)[None, ..., None] * g, pool)
  per = jnp.sum(outside**2, axis=(0, 2, 3, 4))  # [B], summed over K, blocks and C
  if share:
    per = per / (jnp.sum(_sum_pool(g, pool) ** 2, axis=(0, 2, 3, 4)) + SHARE_EPS)
  return _mean_over(per, flags)


def gradia(smap, mask, flags):
  per = jnp.mean(jnp.abs(sal.normalise(smap) - mask), axis=(1, 2))
  return _mean_over(per, flags)


def _dilate(mask, pixels: int):
  if pixels <= 0:
    return mask
  k = 2 * pixels + 1
  return jax.lax.reduce_window(mask, -jnp.inf, jax.lax.max, (1, k, k), (1, 1, 1), "SAME")


def res(smap, mask, flags, *, threshold=0.5, slack=1, beta=4.0):
  t = jnp.tanh(beta * sal.normalise(smap))
  outside = 1.0 - _dilate(mask, slack)
  off = jnp.sum(outside * t, axis=(1, 2)) / jnp.maximum(jnp.sum(outside, axis=(1, 2)), 1.0)
  under = jax.nn.relu(threshold - t) / threshold
  on = jnp.sum(mask * under, axis=(1, 2)) / jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1.0)
  return _mean_over(off + on, flags)


def megl(smap, mask, mask_flags, prior, valid, target_alt=None, alt_flags=None, gamma=1.0):
  """`(supervision, consistency)` (module docstring); `target_alt` [B, H, W] is the rationale's
  attribute-map union for the examples flagged by `alt_flags` (and without a mask)."""
  target, flags = mask, mask_flags
  if target_alt is not None:
    use_alt = alt_flags * (1.0 - mask_flags)
    target = jnp.where(use_alt[:, None, None] > 0, target_alt, mask)
    flags = mask_flags + use_alt
  sup = gradia(smap, target, flags)
  p, q = sal.distribution(smap), sal.distribution(prior, eps=1e-3)
  kl = jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=(1, 2))
  return sup, gamma * _mean_over(kl, valid)


def attribute_union(score_attr, params, x, rationale, saliency):
  """max over the attributes named by `rationale [B, A]` (0/1) of their own normalised maps
  (each from its head's logit), a stop-gradient target `[B, H, W]`."""
  a = rationale.shape[1]
  maps = jax.vmap(
    lambda k: sal.normalise(
      sal.class_map(score_attr, params, x, jnp.full((x.shape[0],), k), saliency)
    )
  )(jnp.arange(a))  # [A, B, H, W]
  maps = jnp.moveaxis(maps, 0, 1) * rationale[:, :, None, None]
  return jax.lax.stop_gradient(jnp.max(maps, axis=1))


def _rationale_target(ctx, meta, x, valid, parts, attr_task, modality, saliency, train):
  """`(flags [B], target [B, H, W])` of MEGL's textual supervision (module docstring)."""
  if parts:
    if ann.RATIONALE_REGION not in meta:
      raise ValueError(
        "config.explanation_loss.rationale_target='part_regions': the dataset gives no "
        f"meta/{ann.RATIONALE_REGION} (rationales with part keypoints)"
      )
    target = meta[ann.RATIONALE_REGION].astype(x.dtype)
    _check_mask(target, x, ann.RATIONALE_REGION)
  else:
    score = _score(ctx, attr_task, modality, train)
    target = attribute_union(score, ctx.params, x, meta[ann.RATIONALE], saliency)
  return meta[ann.RATIONALE_PRESENT].astype(x.dtype) * valid, target


@objective.register_term("explanation")
def explanation_term(config):
  """The configured explanation loss as an objective term (module docstring). A run checked the
  config before anything was written (`configlib.problems`); a direct caller gets the same
  ConfigError here."""
  check_config(config)
  e = config.get("explanation_loss", None)
  if not e or e.kind == "none":
    return lambda ctx: (0.0, {})
  kind, lam, saliency = e.kind, float(e.lam), e.saliency
  task, modality = e.task, e.modality
  attr_task = e.get("attribute_task", "")
  parts = e.get("rationale_target", "attribute_maps") == "part_regions"
  train = e.get("saliency_mode", "train") == "train"
  dilation = int(e.get("mask_dilation", 0))
  rrr_output = e.get("rrr_output", "sum_log_probs")
  rrr_share = bool(e.get("rrr_share", False))
  rrr_pool = int(e.get("rrr_pool", 1))

  def term(ctx):
    x = ctx.batch["inputs"][modality]
    meta, valid = ctx.batch["meta"], ctx.batch["valid"]
    if ann.MASK not in meta:
      raise ValueError(
        f"config.explanation_loss.kind={kind!r}: the dataset {config.data.name!r} gives no "
        f"explanation annotations (meta/{ann.MASK}); see mtljax/data/annotations.py"
      )
    mask = meta[ann.MASK].astype(x.dtype)
    _check_mask(mask, x, ann.MASK)
    if kind != "res" and dilation:  # RES has its own boundary slack
      mask = _dilate(mask, dilation)
    flags = meta[ann.MASK_PRESENT].astype(x.dtype) * valid
    labels = ctx.batch["targets"][task]
    score = _score(ctx, task, modality, train)
    logs = {}
    try:
      if kind == "rrr":
        value = rrr(
          score, ctx.params, x, mask, flags, saliency, labels, rrr_output, rrr_share, rrr_pool
        )
      else:
        smap = sal.class_map(score, ctx.params, x, labels, saliency)
        if kind == "gradia":
          value = gradia(smap, mask, flags)
        elif kind == "res":
          value = res(smap, mask, flags, threshold=float(e.res_threshold),
                      slack=int(e.res_slack), beta=float(e.res_beta))  # fmt: skip
        else:
          alt = alt_flags = None
          if parts or (attr_task and ann.RATIONALE in meta):
            alt_flags, alt = _rationale_target(
              ctx, meta, x, valid, parts, attr_task, modality, saliency, train
            )
          prior = meta[ann.PRIOR].astype(x.dtype)
          _check_mask(prior, x, ann.PRIOR)
          sup, cons = megl(
            smap, mask, flags, prior, valid, alt, alt_flags, float(e.megl_consistency)
          )
          value = sup + cons
          logs["explanation_consistency"] = lam * cons
    except ValueError as err:  # an unknown layer, a layer without a map: the user's config
      if "explanation_loss" in str(err) or isinstance(err, objective_errors()):
        raise
      raise _error(f"config.explanation_loss.saliency={saliency!r}: {err}") from None
    value = lam * value
    logs["explanation"] = value
    return value, logs

  return term
