"""Explanation-loss kinds: RRR, GRADIA, RES and MEGL, a registry of `LossKind` entries.

Each entry carries its function and what it needs; the objective term "explanation"
(`mtljax/egl/term.py`) dispatches on what the entry declares. Every loss is a function of the
params *through* a map of the attribution registry (`mtljax/egl/maps.py`), so the step's
`jax.value_and_grad` differentiates it to second order. An example without a mask (or rationale)
adds nothing to the supervised part, and padding rows / an ensemble member's left-out rows
(`valid` 0) add nothing at all. Losses (per example b, M its mask, S its class map, Ŝ = S / max S):

  rrr     Ross et al. 2017: Σ_{h,w,c} ((1 − M) ⊙ ∂ₓ Σ_k log p_k)²  (the gradient), or the class
          map squared outside M (other methods); mean over annotated examples. `rrr_output`
          picks what is differentiated: "sum_log_probs" (Σ_k log p_k, the published form),
          "true_log_prob" (log p_y) or "centred_log_probs" (each log p_k − mean_j log p_j,
          squared gradients summed over k); why: `rrr_scores`. With a map method (Grad-CAM),
          "centred_log_probs" takes the K signed maps of the centred scores (evidence for and
          against every class), the others the true class's map. `rrr_share`: divided by the
          same sum without (1 − M), the share of the squared map outside M (scale-free: the plain
          sum also falls when every logit shrinks). `rrr_pool` p > 1: (1 − M) ⊙ ∂ₓ is summed over
          p × p blocks before it is squared (the gradient of a uniform change of each block
          outside M: a patch read as its mean colour has per-pixel gradients 1/n of its own,
          squares 1/n², so per pixel its n pixels weigh 1/n of it)
  gradia  mean_{h,w} |Ŝ − M|  (L1 between the normalised map of the true class and the mask)
  res     robust GRADIA (Gao et al. 2022, our reading): T = tanh(β·Ŝ) soft-thresholded; outside
          the mask dilated by `res_slack` pixels T should be 0, inside M it should reach
          `res_threshold` (hinge); the boundary band is free (inaccurate boundaries)
  megl    (a) supervision: the GRADIA L1 towards M where a mask is given, else, where a textual
          rationale names attributes of `attribute_task`, towards the union (max) of those
          attributes' own normalised maps from their heads (stop-gradient target;
          `rationale_target="attribute_maps"`), or towards their annotated part regions
          (`"part_regions"`: the reader's `expl_rationale_region`, discs around the named parts'
          keypoints);
          (b) consistency: KL(P_b ‖ Q_{y_b}) of every valid example's map distribution P to its
          class's dataset-level pattern Q (`expl_prior`: the mean annotated mask of the class),
          weighted by `megl_consistency`

To add a kind: write `fn(batch: Explained) -> (value, logs)` and
`register("name", LossKind(fn, ...))`; `config.explanation_loss.kind="name"` selects it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from mtljax.data import annotations as ann
from mtljax.egl import maps as mp
from mtljax.errors import DataError

RATIONALE_TARGETS = ("attribute_maps", "part_regions")
RRR_OUTPUTS = ("sum_log_probs", "true_log_prob", "centred_log_probs")
#: Added to the denominator of RRR's share form (a map that is 0 everywhere has share 0).
SHARE_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class Explained:
  """What a kind's function reads: one batch, its annotations and the configured maps.

  Attributes:
    settings: `config.explanation_loss`.
    params: the model's params (the loss is differentiated w.r.t. them).
    x: the image input `[B, H, W, C]`; labels: each example's class `[B]`.
    mask: `[B, H, W]` (grown by `mask_dilation` when the kind's `dilates_mask`); flags: `[B]`
      mask present × valid; valid: `[B]` (0 = padding / left out of this member).
    meta: the batch's annotations (`mtljax.data.annotations`).
    prior: `[B, H, W]` the class pattern of a kind that `needs_prior`, else None.
    score: `(params, x) -> [B, K]` the explained task's logits.
    score_of: `task -> score` of another task's logits (MEGL's attribute task).
    maps: the configured attribution method (`maps.Maps`).
  """

  settings: Any
  params: Any
  x: jax.Array
  labels: jax.Array
  mask: jax.Array
  flags: jax.Array
  valid: jax.Array
  meta: Mapping[str, jax.Array]
  prior: jax.Array | None
  score: Callable
  score_of: Callable[[str], Callable]
  maps: mp.Maps


@dataclasses.dataclass(frozen=True)
class LossKind:
  """An explanation loss: `fn(Explained) -> (value, logs)`, both before the weight λ (logs are
  logged as `loss_<name>`, λ-weighted). `dilates_mask`: `mask_dilation` grows the mask first;
  `needs_prior`: reads `meta/expl_prior` (the class patterns); `check(settings, config) ->
  [problem]`: its own settings' problems, each naming its `config.explanation_loss` key."""

  fn: Callable[[Explained], tuple[jax.Array, Mapping[str, jax.Array]]]
  dilates_mask: bool = True
  needs_prior: bool = False
  check: Callable[[Any, Any], list[str]] | None = None


def _mean_over(values, weights):
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def check_size(a, x, key):
  if a.shape[1:] != x.shape[1:3]:
    raise DataError(
      f"config.explanation_loss: the batch's meta/{key} is {a.shape[1:]}, not the image's "
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


def rrr_scores(score: Callable, output: str, index=None) -> Callable:
  """RRR's scores `(params, x) -> [B]` (`[B, K]` for "centred_log_probs") of `score`'s logits:

    sum_log_probs      Σ_k log p_k  (Ross et al. 2017)
    true_log_prob      log p_{index_b}  (each example's own class)
    centred_log_probs  log p_k − mean_j log p_j (= z_k − z̄), one per class k

  The published sum's gradient is Σ_k ∇z_k − K Σ_j p_j ∇z_j: it vanishes at uniform p whatever
  the logits depend on, so a model can silence it by staying unconfident while the argmax still
  follows a shortcut. The own class's ∇ log p_y = (1 − p_y) ∇z_y − Σ_{j≠y} p_j ∇z_j vanishes as
  p_y → 1 instead, which the task loss drives towards. The centred log-probabilities (the
  softmax's normaliser cancels) vanish with neither: their gradients are 0 only where the input
  does not change how the classes compare."""
  if output not in RRR_OUTPUTS:
    raise ValueError(f"unknown RRR output {output!r}")

  def scores(params, x):
    if output == "centred_log_probs":
      return mp.centred_log_probs(score(params, x))
    logp = jax.nn.log_softmax(score(params, x), axis=-1)
    return jnp.sum(logp, axis=-1) if output == "sum_log_probs" else mp.picked(logp, index)

  return scores


def rrr(
  score, params, x, mask, flags, saliency="input_gradient", labels=None, output="sum_log_probs",
  share=False, pool=1, maps: mp.Maps | None = None,
):  # fmt: skip
  """The RRR penalty, averaged over the flagged examples (module docstring); `share`: each
  example's penalty divided by the same sum without the mask (its share outside, in [0, 1]);
  `pool` > 1: the signed map (1 − M) ⊙ ∂ₓ is summed over pool × pool blocks before it is
  squared — the gradient with respect to each block's uniform change outside M. `maps`: the
  attribution method (default: `saliency` on the defaults of `config.explain`).

  The maps: a method with a signed form (`MethodSpec.signed_options`) whose attributions are
  shaped like the inputs gives its signed attributions of `rrr_scores` (the gradient: Ross et
  al.'s form, channels kept); a map method's signed form is taken for the centred scores only (K
  maps: evidence for and against each class); otherwise the true class's map."""
  maps = maps or mp.default_maps(saliency)
  spec = maps.spec
  if spec.signed_options and (output == "centred_log_probs" or spec.output == "inputs"):
    g = maps.signed_maps(rrr_scores(score, output, labels), params, x)  # [N, B, H, W, C]
  else:  # [1, B, H, W, 1]
    g = maps.class_map(score, params, x, labels)[None, ..., None]
  outside = _sum_pool((1.0 - mask)[None, ..., None] * g, pool)
  per = jnp.sum(outside**2, axis=(0, 2, 3, 4))  # [B], summed over K, blocks and C
  if share:
    per = per / (jnp.sum(_sum_pool(g, pool) ** 2, axis=(0, 2, 3, 4)) + SHARE_EPS)
  return _mean_over(per, flags)


def gradia(smap, mask, flags):
  per = jnp.mean(jnp.abs(mp.normalise(smap) - mask), axis=(1, 2))
  return _mean_over(per, flags)


def dilate(mask, pixels: int):
  if pixels <= 0:
    return mask
  k = 2 * pixels + 1
  return jax.lax.reduce_window(mask, -jnp.inf, jax.lax.max, (1, k, k), (1, 1, 1), "SAME")


def res(smap, mask, flags, *, threshold=0.5, slack=1, beta=4.0):
  t = jnp.tanh(beta * mp.normalise(smap))
  outside = 1.0 - dilate(mask, slack)
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
  p, q = mp.distribution(smap), mp.distribution(prior, eps=1e-3)
  kl = jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=(1, 2))
  return sup, gamma * _mean_over(kl, valid)


def attribute_union(score_attr, params, x, rationale, saliency):
  """max over the attributes named by `rationale [B, A]` (0/1) of their own normalised maps
  (each from its head's logit), a stop-gradient target `[B, H, W]`; `saliency`: the method's
  name or a `maps.Maps`."""
  maps = saliency if isinstance(saliency, mp.Maps) else mp.default_maps(saliency)
  a = rationale.shape[1]
  union = jax.vmap(
    lambda k: mp.normalise(maps.class_map(score_attr, params, x, jnp.full((x.shape[0],), k)))
  )(jnp.arange(a))  # [A, B, H, W]
  union = jnp.moveaxis(union, 0, 1) * rationale[:, :, None, None]
  return jax.lax.stop_gradient(jnp.max(union, axis=1))


# ------------------------------------------------------------------------------ the kinds


def _rrr(b: Explained):
  e = b.settings
  value = rrr(
    b.score, b.params, b.x, b.mask, b.flags, labels=b.labels,
    output=e.get("rrr_output", "sum_log_probs"), share=bool(e.get("rrr_share", False)),
    pool=int(e.get("rrr_pool", 1)), maps=b.maps,
  )  # fmt: skip
  return value, {}


def _check_rrr(e, config) -> list[str]:
  key, out = "config.explanation_loss", []
  if e.get("rrr_output", "sum_log_probs") not in RRR_OUTPUTS:
    out.append(f"{key}.rrr_output={e.rrr_output!r} is not one of {RRR_OUTPUTS}")
  pool = e.get("rrr_pool", 1)
  if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
    out.append(f"{key}.rrr_pool={pool!r} must be a whole number of pixels ≥ 1 (1 = per pixel)")
  return out


def _gradia(b: Explained):
  return gradia(b.maps.class_map(b.score, b.params, b.x, b.labels), b.mask, b.flags), {}


def _res(b: Explained):
  e = b.settings
  smap = b.maps.class_map(b.score, b.params, b.x, b.labels)
  value = res(smap, b.mask, b.flags, threshold=float(e.res_threshold), slack=int(e.res_slack),
              beta=float(e.res_beta))  # fmt: skip
  return value, {}


def _rationale_target(b: Explained, parts: bool, attr_task: str):
  """`(flags [B], target [B, H, W])` of MEGL's textual supervision (module docstring)."""
  meta, x = b.meta, b.x
  if parts:
    if ann.RATIONALE_REGION not in meta:
      raise ValueError(
        "config.explanation_loss.rationale_target='part_regions': the dataset gives no "
        f"meta/{ann.RATIONALE_REGION} (rationales with part keypoints)"
      )
    target = meta[ann.RATIONALE_REGION].astype(x.dtype)
    check_size(target, x, ann.RATIONALE_REGION)
  else:
    target = attribute_union(b.score_of(attr_task), b.params, x, meta[ann.RATIONALE], b.maps)
  return meta[ann.RATIONALE_PRESENT].astype(x.dtype) * b.valid, target


def _megl(b: Explained):
  e = b.settings
  attr_task = e.get("attribute_task", "")
  parts = e.get("rationale_target", "attribute_maps") == "part_regions"
  smap = b.maps.class_map(b.score, b.params, b.x, b.labels)
  alt = alt_flags = None
  if parts or (attr_task and ann.RATIONALE in b.meta):
    alt_flags, alt = _rationale_target(b, parts, attr_task)
  gamma = float(e.megl_consistency)
  sup, cons = megl(smap, b.mask, b.flags, b.prior, b.valid, alt, alt_flags, gamma)
  return sup + cons, {"explanation_consistency": cons}


def _check_megl(e, config) -> list[str]:
  key, out = "config.explanation_loss", []
  attr = e.get("attribute_task", "")
  if attr and attr not in config.tasks:
    out.append(f"{key}.attribute_task={attr!r} is not one of the tasks {sorted(config.tasks)}")
  if e.get("rationale_target", "attribute_maps") not in RATIONALE_TARGETS:
    out.append(f"{key}.rationale_target={e.rationale_target!r} is not one of {RATIONALE_TARGETS}")
  return out


KINDS: dict[str, LossKind] = {
  "rrr": LossKind(_rrr, check=_check_rrr),
  "gradia": LossKind(_gradia),
  "res": LossKind(_res, dilates_mask=False),  # its own boundary slack
  "megl": LossKind(_megl, needs_prior=True, check=_check_megl),
}


def register(name: str, kind: LossKind) -> LossKind:
  """Adds explanation-loss kind `name` (ValueError if the name is taken); returns `kind`."""
  if name in KINDS or name == "none":
    raise ValueError(f"explanation-loss kind {name!r} is already registered")
  KINDS[name] = kind
  return kind
