"""XRAI (Kapishnikov et al. 2019, "XRAI: better attributions through regions"), as PAIR `saliency`
0.2.1's `XRAI` (the "full" algorithm).

1. Base attribution: Integrated Gradients from a black and a white baseline (the image's min and
   max value), averaged; PAIR's Riemann rule: the mean gradient at `linspace(0, 1, steps)` times
   `x - baseline`. Channels are merged by their maximum.
2. Regions: Felzenszwalb segmentations of the image (rescaled to [-1, 1], resized to 224 x 224) at
   scales 50, 100, 150, 250, 500, 1200 (sigma 0.8, min size 150), resized back, one mask per label
   of each scale, every mask dilated by a disk of radius 5 (`segment_masks`, scikit-image on the
   host).
3. Greedy: repeatedly add the mask whose new pixels (not yet covered) have the highest mean base
   attribution, dropping masks that would add fewer than `min_pixel_diff` pixels; every new pixel
   gets that mean (its "gain"); pixels never covered get the mean attribution over them.

Step 3 is `xrai_map` (jitted: a `lax.while_loop` over masks, all masks scored at once). Inside a
jitted explain run, step 2 runs through `jax.pure_callback`, one example at a time (`lax.map`),
so the masks of one image (at most `MAX_MASKS`, padded with empty ones) are in memory at once.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

SCALES = (50, 100, 150, 250, 500, 1200)
_SIGMA, _MIN_SIZE, _RESIZE, _DILATION = 0.8, 150, (224, 224), 5
# Felzenszwalb with min_size 150 on 224 x 224 leaves at most 224 * 224 // 150 labels per scale.
MAX_MASKS = len(SCALES) * (_RESIZE[0] * _RESIZE[1] // _MIN_SIZE)


def segment_masks(image: np.ndarray) -> np.ndarray:
  """PAIR's multi-scale Felzenszwalb masks of one `[H, W, C]` image: bool `[M, H, W]`."""
  from skimage import segmentation
  from skimage.morphology import dilation, disk
  from skimage.transform import resize

  im = np.asarray(image, np.float64)
  lo, hi = im.min(), im.max()
  im = (im - lo) / (hi - lo) * 2.0 - 1.0
  im = resize(im, _RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
  foot = disk(_DILATION)
  masks = []
  for scale in SCALES:
    seg = segmentation.felzenszwalb(im, scale=scale, sigma=_SIGMA, min_size=_MIN_SIZE)
    seg = resize(
      seg, image.shape[:2], order=0, preserve_range=True, mode="constant", anti_aliasing=False
    ).astype(int)
    masks += [dilation(seg == lab, footprint=foot) for lab in range(seg.min(), seg.max() + 1)]
  return np.stack(masks)


_CACHE: dict = {}  # the same image comes back for every target and member: segment it once


def padded_masks(image: np.ndarray, size: int = MAX_MASKS) -> np.ndarray:
  """`segment_masks` padded with empty masks to `size` (an empty mask is never chosen); the
  last 64 images' masks are kept."""
  image = np.asarray(image)
  key = (image.shape, image.dtype.str, hashlib.sha1(image.tobytes()).hexdigest(), size)
  if key not in _CACHE:
    if len(_CACHE) >= 64:
      _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = _pad(segment_masks(image), size)
  return _CACHE[key]


def _pad(m, size):
  if m.shape[0] > size:
    raise ValueError(f"XRAI: {m.shape[0]} segment masks, more than the {size} allowed")
  return np.concatenate([m, np.zeros((size - m.shape[0],) + m.shape[1:], bool)])


def xrai_map(attr, masks, *, min_pixel_diff: int = 50):
  """Greedy XRAI regions of one `[H, W]` base attribution over bool masks `[M, H, W]` (PAIR's
  `_xrai` with area threshold 1): returns the `[H, W]` XRAI map. Jit-able; ties go to the first
  mask, as in PAIR."""
  m = masks.reshape(masks.shape[0], -1).astype(attr.dtype)
  a = attr.reshape(-1)

  def cond(c):
    return c[3]

  def body(c):
    cur, out, alive, _ = c
    free = (~cur).astype(a.dtype)
    cnt = m @ free
    alive = alive & (cnt >= min_pixel_diff)
    gain = jnp.where(alive, (m @ (a * free)) / jnp.where(alive, cnt, 1.0), -jnp.inf)
    any_left = jnp.any(alive)
    best = jnp.argmax(gain)
    new = (m[best] > 0) & ~cur & any_left
    out = jnp.where(new, gain[best], out)
    alive = alive & (jnp.arange(alive.shape[0]) != best)
    return cur | new, out, alive, any_left

  init = (
    jnp.zeros_like(a, bool),
    jnp.full_like(a, -jnp.inf),
    jnp.ones(m.shape[0], bool),
    jnp.array(True),
  )
  cur, out, _, _ = jax.lax.while_loop(cond, body, init)
  left = ~cur
  fill = jnp.sum(jnp.where(left, a, 0.0)) / jnp.maximum(jnp.sum(left), 1)
  return jnp.where(left, fill, out).reshape(attr.shape)


def pair_ig(f, params, inputs, *, modality: str, baseline, steps: int):
  """PAIR's IG: `mean_{alpha in linspace(0, 1, steps)} grad f(b + alpha (x - b)) * (x - b)`."""
  x = inputs[modality]
  d = x - baseline

  def grad_at(alpha):
    img = baseline + alpha * d
    return jax.grad(lambda im: f(params, {**inputs, modality: im}).sum())(img)

  alphas = jnp.linspace(0.0, 1.0, steps, dtype=x.dtype)
  return jax.lax.map(grad_at, alphas).mean(0) * d


def base_attribution(f, params, inputs, *, modality: str, steps: int = 100):
  """XRAI's base map `[B, H, W]`: IG from the black and the white baseline (each image's min and
  max), averaged, channels merged by max."""
  x = inputs[modality]
  axes = tuple(range(1, x.ndim))
  lo = jnp.broadcast_to(x.min(axes, keepdims=True), x.shape)
  hi = jnp.broadcast_to(x.max(axes, keepdims=True), x.shape)
  ig = sum(pair_ig(f, params, inputs, modality=modality, baseline=b, steps=steps) for b in (lo, hi))
  return (ig / 2.0).max(-1)


def xrai(f, params, inputs, *, modality: str, steps: int = 100, min_pixel_diff: int = 50):
  """XRAI maps `[B, H, W]` of `f` w.r.t. `inputs[modality]` `[B, H, W, C]` (jit-able: the
  segmentation runs on the host through `jax.pure_callback`, one image at a time)."""
  x = inputs[modality]
  attr = base_attribution(f, params, inputs, modality=modality, steps=steps)
  shape = jax.ShapeDtypeStruct((MAX_MASKS,) + x.shape[1:3], jnp.bool_)

  def one(args):
    img, a = args
    masks = jax.pure_callback(padded_masks, shape, img, vmap_method="sequential")
    return xrai_map(a, masks, min_pixel_diff=min_pixel_diff)

  return jax.lax.map(one, (jax.lax.stop_gradient(x), attr))
