"""Textual explanations grounded by saliency (MEGL's SDTG, without a language model).

For each explained example of a model with a classification task (`config.explain.textual`) and
a multilabel attribute task (`config.explain.task`), one sentence:

    "Synthetic_bird_03 (p=0.91): red bill (p=0.97, 34% of the class map), upper left; blue wing
     (p=0.88, 21%), center"

the predicted class with its probability, then each attribute the model finds present (head
probability > 0.5), ordered by its share of the class explanation, and where it is in words taken
from its own saliency map (the centre of mass of the attribute head's input-gradient map on a
3×3 grid: upper/middle/lower × left/center/right; the centre of its pixels at ≥ half the map's
maximum). Share = Σ S_class·Ŝ_a / Σ S_class, the
fraction of the class map's mass lying where the attribute's own (max-normalised) map is.
Ensemble: probabilities and maps are averaged over the members.

Scored against the annotations: precision and recall of the named attributes against the
attribute labels, and location correctness (the location word of the attribute's map equals that
of its annotated keypoint, or mask centroid where no keypoint). Written beside the maps:
`explanations/<split>/textual.json` (every sentence and score), `textual.md` (the summary) and
`textual_<k>.png` (the image with its sentence drawn under it).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import fileio
from mtljax.data.annotations import Owner, owners, phrase, target_keys
from mtljax.data.source import capability

_ROWS, _COLS = ("upper", "middle", "lower"), ("left", "center", "right")


def location_words(yx, hw) -> str:
  """A (y, x) point in an image of size hw as "upper left" … "lower right" ("center")."""
  r = min(2, max(0, int(3 * float(yx[0]) / hw[0])))
  c = min(2, max(0, int(3 * float(yx[1]) / hw[1])))
  return "center" if (r, c) == (1, 1) else f"{_ROWS[r]} {_COLS[c]}"


def _com(m):
  """Centre of mass (y, x) of the map's strongest part (pixels at ≥ half its maximum)."""
  w = np.maximum(m, 0)
  w = w * (w >= 0.5 * w.max())
  ys, xs = np.mgrid[0 : m.shape[0], 0 : m.shape[1]]
  total = w.sum()
  return (np.nan, np.nan) if total <= 0 else ((w * ys).sum() / total, (w * xs).sum() / total)


def _maps_fn(model, class_task, attr_task, modality, num_attr):
  def member(variables, inputs, cls):
    def out(x):
      return model.apply(variables, {**inputs, modality: x}, train=False)[0]

    o = out(inputs[modality])

    def grad_of(task, k):
      f = lambda x: jnp.sum(out(x)[task][:, k] if k.ndim == 0 else  # noqa: E731
                            jnp.take_along_axis(out(x)[task], k[:, None], 1))  # fmt: skip
      g = jax.grad(f)(inputs[modality])
      s = jnp.sum(jnp.abs(g), -1)
      return s / (jnp.max(s, axis=(1, 2), keepdims=True) + 1e-12)

    cmap = grad_of(class_task, cls)
    amaps = jax.vmap(lambda k: grad_of(attr_task, k))(jnp.arange(num_attr))  # [A, B, H, W]
    return (jax.nn.softmax(o[class_task]), jax.nn.sigmoid(o[attr_task]), cmap,
            jnp.moveaxis(amaps, 0, 1))  # fmt: skip

  def run(stacked, inputs, cls):
    outs = jax.vmap(member, in_axes=(0, None, None))(stacked, inputs, cls)
    return jax.tree.map(lambda v: jnp.mean(v, 0), outs)

  return jax.jit(run)


def explain(config, s, stacked, data, images, src, out_dir, *, write=True) -> dict[str, Any]:
  """Sentences and their scores for the collected examples (module docstring)."""
  ex = config.explain
  class_task, attr_task, modality = ex.textual, ex.task, ex.modality
  attr_names = list(src.target_fields[attr_task].get("class_names") or [])
  class_names = list(src.target_fields[class_task].get("class_names") or [])
  num_attr = int(config.tasks[attr_task].num_classes)
  attr_names = attr_names or [f"attribute {k}" for k in range(num_attr)]
  fn = _maps_fn(s.model, class_task, attr_task, modality, num_attr)
  probs, aprobs, cmaps, amaps = [], [], [], []
  bs = int(ex.batch_size)
  n = len(data["index"])
  for a in range(0, n, bs):
    inputs = {k: jnp.asarray(v[a : a + bs]) for k, v in data["inputs"].items()}
    p, *_ = fn(stacked, inputs, jnp.zeros(len(inputs[modality]), jnp.int32))
    p, ap, cm, am = fn(stacked, inputs, jnp.argmax(p, -1))  # the ensemble's predicted class
    for lst, v in zip((probs, aprobs, cmaps, amaps), (p, ap, cm, am)):
      lst.append(np.asarray(v))
  probs, aprobs = np.concatenate(probs), np.concatenate(aprobs)
  cmaps, amaps = np.concatenate(cmaps), np.concatenate(amaps)
  annotate = capability(src, "explain_annotations")
  # Attribute k's annotation: the one the source declares for it (or for the whole task).
  targets = [Owner(attr_task, k) for k in range(num_attr)]
  keys = target_keys(owners(src), targets) if annotate else [()] * num_attr
  hw = cmaps.shape[1:]
  items, tp, fp, fn_, loc_ok, loc_n = [], 0, 0, 0, 0, 0
  labels = data["targets"][attr_task]
  for i in range(n):
    c = int(np.argmax(probs[i]))
    shares = (cmaps[i][None] * amaps[i]).sum((1, 2)) / max(float(cmaps[i].sum()), 1e-12)
    named = [k for k in np.argsort(-shares) if aprobs[i, k] > 0.5]
    ann = annotate(int(data["index"][i])) if annotate else {"masks": {}, "keypoints": {}}
    parts, located = [], []
    for k in named:
      where = location_words(_com(amaps[i, k]), hw)
      parts.append(
        f"{phrase(attr_names[k])} (p={aprobs[i, k]:.2f}, {shares[k]:.0%} of the class map), {where}"
      )
      kp = next((ann["keypoints"][a] for a in keys[k] if a in ann["keypoints"]), None)
      mask = next((ann["masks"][a] for a in keys[k] if a in ann["masks"]), None)
      if kp is None and mask is not None:
        kp = _com(mask.astype(np.float32))
      if kp is not None and np.all(np.isfinite(kp)) and labels[i, k] > 0:
        located.append(where == location_words(kp, hw))
    cname = class_names[c] if c < len(class_names) else str(c)
    sentence = f"{cname} (p={probs[i, c]:.2f}): " + ("; ".join(parts) or "no attribute found")
    truth = set(np.flatnonzero(labels[i] > 0))
    tp += len(truth & set(named))
    fp += len(set(named) - truth)
    fn_ += len(truth - set(named))
    loc_ok, loc_n = loc_ok + sum(located), loc_n + len(located)
    items.append({"index": int(data["index"][i]), "sentence": sentence,
                  "named": [attr_names[k] for k in named], "location_correct": located})  # fmt: skip
  summary = {
    "attribute_precision": tp / max(tp + fp, 1),
    "attribute_recall": tp / max(tp + fn_, 1),
    "location_accuracy": loc_ok / max(loc_n, 1),
    "located": loc_n,
    "examples": n,
  }
  if write:
    fileio.write_json(os.path.join(out_dir, "textual.json"), {"summary": summary, "items": items})
    md = "| attribute precision | attribute recall | location correct |\n|---|---|---|\n"
    md += (
      f"| {summary['attribute_precision']:.3f} | {summary['attribute_recall']:.3f} | "
      f"{summary['location_accuracy']:.3f} ({loc_n} located) |\n\n"
    )
    md += "\n".join(f"- {it['index']}: {it['sentence']}" for it in items[:20]) + "\n"
    fileio.write_text(os.path.join(out_dir, "textual.md"), md)
    for k in range(min(n, int(ex.get("num_pictures", 8)))):
      _picture(os.path.join(out_dir, f"textual_{k}.png"), images[k], items[k]["sentence"])
  return summary


def _picture(path, image, sentence, scale=6, width=60):
  """The image (upscaled) with its sentence drawn beneath, wrapped."""
  import textwrap

  from PIL import Image, ImageDraw

  img = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8).squeeze())
  img = img.convert("RGB").resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
  lines = textwrap.wrap(sentence, width)
  canvas = Image.new(
    "RGB", (max(img.width, 6 * width + 8), img.height + 12 * len(lines) + 8), "white"
  )
  canvas.paste(img, (0, 0))
  draw = ImageDraw.Draw(canvas)
  for j, line in enumerate(lines):
    draw.text((4, img.height + 4 + 12 * j), line, fill=(0, 0, 0))
  with fileio.atomic_path(path) as tmp:
    canvas.save(tmp, format="PNG")
