"""A TFDS builder's features as a schema of the manifest's form (``mtljax.data.manifest.schema``),
so the manifest's completion (encoders by shape, heads, fusion, grid) and fields apply unchanged.

A feature of the builder is a column: an ``Image`` or a ``Tensor`` of rank 2 or 3 is a raster
(``[H, W]`` read as ``[H, W, 1]``); a numeric ``Tensor`` of rank 1 or a ``Scalar`` a vector
input; a ``ClassLabel`` a class (its ``names`` are the classes, so no scan of the data); a
``Sequence`` of a ``ClassLabel`` labels (multilabel); a float scalar a value; an integer scalar
a class whose classes are ``0..max`` of the training split. As a target, a raster is dense: an
integer raster classes per pixel (``1 + max`` of the training split, or the ClassLabel's count of
a ``Sequence``-free image), a float raster values per pixel. ``config.tasks.<name>.kind`` names
the kind instead of the inference; a kind that does not fit the feature is a problem. Text and
other features cannot be modalities (they are refused naming the feature).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from mtljax.data.manifest.schema import CLASS, LABELS, VALUE

# How many training examples an integer feature without class names is scanned over for its
# largest class (a prepared TFDS split is random access: the scan reads these examples only).
SCAN_EXAMPLES = 2048


def _type_name(feature) -> str:
  return type(feature).__name__


def _shape_dtype(feature) -> tuple[tuple, np.dtype | None]:
  shape = tuple(getattr(feature, "shape", ()) or ())
  dtype = getattr(feature, "np_dtype", None)
  return shape, (np.dtype(dtype) if dtype is not None else None)


def describe(feature) -> dict:
  """What a feature is, by type, shape and dtype: ``{"type": "raster" | "vector" | "class" |
  "labels" | "number" | None, "shape", "dtype", "classes" (names or None)}``."""
  name = _type_name(feature)
  shape, dtype = _shape_dtype(feature)
  if name == "ClassLabel":
    return {"type": "class", "shape": [], "dtype": "int64", "classes": list(feature.names)}
  if name in ("Sequence", "Sequence_") and _type_name(getattr(feature, "feature", None)) == (
    "ClassLabel"
  ):
    return {"type": "labels", "shape": [], "dtype": "int64", "classes": list(feature.feature.names)}
  if dtype is None or dtype.kind not in "uifb" or name not in ("Image", "Tensor", "Scalar"):
    return {"type": None, "what": f"{name}{list(shape)}"}
  if any(s is None or s < 0 for s in shape):
    return {"type": None, "what": f"{name} of variable shape {list(shape)}"}
  kind = {0: "number", 1: "vector", 2: "raster", 3: "raster"}.get(len(shape))
  if kind is None:
    return {"type": None, "what": f"{name} of rank {len(shape)}"}
  shape = list(shape) + ([1] if len(shape) == 2 else [])
  return {"type": kind, "shape": shape, "dtype": dtype.name, "classes": None}


def infer(
  features: Mapping,
  *,
  inputs: Sequence[str],
  targets: Mapping[str, str],
  kinds: Mapping[str, tuple[str, bool]],
  scan: Callable[[str], int],
) -> tuple[dict, list[tuple[int, str, str]]]:
  """``(schema, problems)`` of the features a run uses (``schema.py`` of the manifest has the
  entries' form). ``scan(name)``: the largest value of an integer feature over the training
  split (for class counts the builder does not name). A problem is ``(0, feature, what)``."""
  columns, problems = {}, []

  def problem(name, what):
    problems.append((0, name, f"expected {what}"))

  for name in list(inputs) + list(targets):
    if name not in features:
      problem(name, f"a feature of the builder (it has {sorted(features)})")
      continue
    d = describe(features[name])
    if d["type"] is None:
      problem(name, f"an image, tensor or class label feature, got {d['what']}")
      continue
    if name in inputs:
      if d["type"] in ("class", "labels"):
        problem(name, "an image or numbers as an input (class labels are targets)")
        continue
      shape = [1] if d["type"] == "number" else d["shape"]
      entry = {"type": "raster" if d["type"] == "raster" else "vector", "shape": shape}
      columns[name] = {**entry, "dtype": d["dtype"], "role": "input"}
      if entry["type"] == "vector":
        columns[name]["columns"] = [name]
      continue
    kind = targets[name]
    if kind and kind not in kinds:
      problem(name, f"a registered task kind, got {kind!r}")
      continue
    dense = d["type"] == "raster"
    want, want_dense = kinds[kind] if kind else (None, dense)
    if want_dense != dense:
      problem(name, f"{'a raster' if want_dense else 'one value per example'} for kind {kind!r}")
      continue
    integer = np.dtype(d["dtype"]).kind in "uib"
    if want is None:
      if d["type"] in ("class", "labels"):
        want = CLASS if d["type"] == "class" else LABELS
      else:
        want = CLASS if integer and d["type"] != "vector" else VALUE
    if d["type"] == "vector" and want != VALUE:
      problem(name, f"one number per example for kind {kind!r}, got shape {d['shape']}")
      continue
    if want in (CLASS, LABELS) and not integer and d["type"] not in ("class", "labels"):
      problem(name, f"integers or class labels for kind {kind or want!r}, got {d['dtype']}")
      continue
    if want == LABELS and d["type"] != "labels":
      problem(name, f"a sequence of class labels for kind {kind!r}")
      continue
    entry = {"type": "raster" if dense else want, "shape": d["shape"], "dtype": d["dtype"]}
    if want in (CLASS, LABELS):
      names = d["classes"]
      if dense:
        entry["classes"] = int(scan(name)) + 1
      else:
        entry["classes"] = names if names else [str(k) for k in range(int(scan(name)) + 1)]
      entry["type"] = "raster" if dense else ("class" if want == CLASS else "labels")
    elif dense:
      entry["type"] = "raster"
    else:
      entry["type"] = "value"
    sig = (want, dense)
    kind = kind or next((k for k, s in kinds.items() if s == sig), "")
    columns[name] = {**entry, "role": "target", "target": want, "dense": dense, "kind": kind}
  return {"columns": columns}, problems
