"""ImageNet-pretrained ResNet weights from the checkpoints users have: torchvision's and timm's
ResNet-18/50 state dicts (both use torchvision's key names: ``conv1``, ``bn1``,
``layer{1-4}.{j}.conv{1-3}``, ``.bn{1-3}``, ``.downsample.{0,1}``, ``fc``), as ``.safetensors``
or as ``.pth`` read with ``torch.load(weights_only=True)`` (never unpickling anything else).

``resnet_variables(path, ...)`` gives the flax ``params`` and ``batch_stats`` of
``mtljax.models.encoders.ResNet`` (same architecture as torchvision's: 7×7/2 stem padded 3,
3×3/2 max pool padded 1, stride on the first 3×3 of a stage, 1×1 projection shortcuts, BatchNorm
eps 1e-5), with the stem adapted to the input's bands: bands named R, G, B keep those weights,
any other band (near-infrared, ...) gets the mean of the three RGB filters. The classifier
(``fc``) is not used. Nothing is downloaded: see docs/prepared-data.md for where to get weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mtljax.errors import ConfigError

_RGB = {"r": 0, "red": 0, "g": 1, "green": 1, "b": 2, "blue": 2}


class PretrainedError(ConfigError):
  """A weights file that cannot be used (missing, unreadable, another architecture): the
  config's `encoder_kwargs.pretrained` is wrong (one `error:` line, exit 2)."""


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """``{key: float32 array}`` of a torch state dict file (``.safetensors`` or ``.pth``/``.pt``)."""
  if not os.path.exists(path):
    raise PretrainedError(f"pretrained weights {path!r}: no such file")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file

    try:
      state = load_file(path)
    except Exception as e:  # noqa: BLE001 (whatever the file's problem is, name the file)
      raise PretrainedError(f"pretrained weights {path}: not a safetensors file ({e})") from None
  elif path.endswith((".pth", ".pt")):
    try:
      import torch
    except ImportError:
      raise PretrainedError(
        f"pretrained weights {path}: reading .pth needs torch; convert it to .safetensors"
      ) from None
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
      raise PretrainedError(f"pretrained weights {path}: not a torch state dict ({e})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "detach")}
  else:
    raise PretrainedError(f"pretrained weights {path}: expected a .safetensors or .pth file")
  return {k.removeprefix("module."): np.asarray(v) for k, v in state.items()}


def _conv(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0)).astype(np.float32)  # OIHW -> HWIO


def adapt_stem(w: np.ndarray, bands: Sequence[str], num_bands: int) -> np.ndarray:
  """The RGB stem kernel ``[O, 3, H, W]`` as ``[H, W, num_bands, O]`` for the input's bands."""
  if w.shape[1] != 3:
    raise PretrainedError(f"stem conv1.weight has {w.shape[1]} input channels, expected 3 (RGB)")
  bands = [str(b).lower() for b in bands] or ["r", "g", "b"][:num_bands]
  if len(bands) < num_bands:
    bands += [f"extra{i}" for i in range(len(bands), num_bands)]
  mean = w.mean(axis=1)
  cols = [w[:, _RGB[b]] if b in _RGB else mean for b in bands[:num_bands]]
  return _conv(np.stack(cols, axis=1))


def resnet_variables(
  path: str,
  *,
  stage_sizes: Sequence[int],
  block: str,
  width: int,
  num_bands: int,
  bands: Sequence[str] = (),
) -> tuple[dict, dict]:
  """``(params, batch_stats)`` of ``ResNet(stage_sizes, width, block=block)`` from ``path``.

  Raises PretrainedError naming the file and the first missing key or mismatched shape (a
  ResNet-50 file for a ResNet-18 encoder, a truncated file), or the keys it did not use.
  """
  state = load_state_dict(path)
  used: set[str] = set()

  def take(key, shape=None):
    if key not in state:
      raise PretrainedError(
        f"pretrained weights {path}: missing key {key!r} (a ResNet with block={block!r}, "
        f"stage_sizes={tuple(stage_sizes)}, width={width} was expected)"
      )
    value = state[key]
    if shape is not None and tuple(value.shape) != tuple(shape):
      raise PretrainedError(
        f"pretrained weights {path}: {key} has shape {tuple(value.shape)}, expected "
        f"{tuple(shape)} for block={block!r}, stage_sizes={tuple(stage_sizes)} (another "
        "architecture?)"
      )
    used.add(key)
    return np.asarray(value, np.float32)

  def bn(prefix, n):
    params = {"scale": take(f"{prefix}.weight", (n,)), "bias": take(f"{prefix}.bias", (n,))}
    stats = {"mean": take(f"{prefix}.running_mean", (n,)), "var": take(f"{prefix}.running_var", (n,))}  # fmt: skip
    used.add(f"{prefix}.num_batches_tracked")
    return params, stats

  def conv(key, out, cin, k):
    return {"kernel": _conv(take(key, (out, cin, k, k)))}

  params, stats = {}, {}
  stem = take("conv1.weight")
  if stem.shape[0] != width:
    raise PretrainedError(f"pretrained weights {path}: conv1 has {stem.shape[0]} filters, "
                          f"the encoder's width is {width}")  # fmt: skip
  params["stem_conv"] = {"kernel": adapt_stem(stem, bands, num_bands)}
  params["stem_bn"], stats["stem_bn"] = bn("bn1", width)
  expansion = 4 if block == "bottleneck" else 1
  cin = width
  for i, n in enumerate(stage_sizes):
    f = width * 2**i
    for j in range(n):
      t, name = f"layer{i + 1}.{j}", f"stage{i + 1}_block{j + 1}"
      p, s = {}, {}
      if block == "bottleneck":
        p["conv1"] = conv(f"{t}.conv1.weight", f, cin, 1)
        p["conv2"] = conv(f"{t}.conv2.weight", f, f, 3)
        p["conv3"] = conv(f"{t}.conv3.weight", 4 * f, f, 1)
        for b, c in (("bn1", f), ("bn2", f), ("bn3", 4 * f)):
          p[b], s[b] = bn(f"{t}.{b}", c)
      else:
        p["conv1"] = conv(f"{t}.conv1.weight", f, cin, 3)
        p["conv2"] = conv(f"{t}.conv2.weight", f, f, 3)
        for b in ("bn1", "bn2"):
          p[b], s[b] = bn(f"{t}.{b}", f)
      if cin != f * expansion or (i > 0 and j == 0):
        p["proj_conv"] = conv(f"{t}.downsample.0.weight", f * expansion, cin, 1)
        p["proj_bn"], s["proj_bn"] = bn(f"{t}.downsample.1", f * expansion)
      params[name], stats[name] = p, s
      cin = f * expansion
  left = sorted(k for k in state if k not in used and not k.startswith(("fc.", "head.fc.")))
  if left:
    raise PretrainedError(
      f"pretrained weights {path}: {len(left)} keys not used by block={block!r}, "
      f"stage_sizes={tuple(stage_sizes)} (e.g. {left[0]!r}; another architecture?)"
    )
  return params, stats


def apply(model, params: dict, batch_stats: dict) -> tuple[dict, dict]:
  """``params``/``batch_stats`` of a freshly initialised model with every encoder that names
  ``pretrained`` weights replaced by them (the model's ``encoders_<input>`` submodules)."""
  encoders = getattr(model, "encoders", None) or {}
  params, batch_stats = dict(params), dict(batch_stats)
  for name, enc in encoders.items():
    path = getattr(enc, "pretrained", "")
    if not path:
      continue
    key = f"encoders_{name}"
    num_bands = int(params[key]["stem_conv"]["kernel"].shape[2])
    p, s = resnet_variables(
      path,
      stage_sizes=enc.stage_sizes,
      block=enc.block,
      width=enc.width,
      num_bands=num_bands,
      bands=tuple(enc.pretrained_bands),
    )
    _check_shapes(params[key], p, f"{path} for input {name!r}")
    params[key], batch_stats[key] = p, s
  return params, batch_stats


def _check_shapes(init, loaded, what, prefix=""):
  for k, v in init.items():
    if isinstance(v, dict):
      _check_shapes(v, loaded.get(k, {}), what, f"{prefix}{k}/")
    elif k not in loaded or tuple(np.shape(loaded[k])) != tuple(v.shape):
      raise PretrainedError(f"pretrained weights {what}: {prefix}{k} does not fit the encoder")
