"""Shared pieces of the benchmarks: the compared models in JAX and in PyTorch with identical
weights, side-by-side timing, and the JSON/table output.

Models (each exists as a linen module and as a torch module; `to_torch` copies the weights):
  cnn       3-conv CNN: conv3x3(32) → ReLU → conv3x3/2(64) → ReLU →
            conv3x3/2(64) → ReLU → global average pool → dense(10); 64×64×3 inputs.
  resnet18  the TreeSAT aerial encoder (`mtljax.models.encoders.ResNet`, ResNet-18, BatchNorm in
            inference mode) + the L3 linear head (15 classes); 4-band inputs (304×304 in TreeSAT).
  mlp       the TreeSAT Sentinel MLP (`MLPEncoder`, 3 × 512, ReLU, dropout off at inference) + the
            L3 head, on 540-d inputs (6×6×15 bands of S1 and S2 flattened).

torch (and captum) are benchmark-only extras: `pip install torch==2.13.0 captum==0.9.0`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtljax.models import activations, convolution, encoders

NUM_CLASSES = {"cnn": 10, "resnet18": 15, "mlp": 15}
GRAD_CAM_LAYER = {"cnn": "conv3", "resnet18": "encoder/stage4_block2"}
# The first layer of each model, affine in the input: Integrated Gradients splits after it.
AFFINE_FIRST_LAYER = {"cnn": "conv1", "resnet18": "encoder/stem_conv", "mlp": "encoder/dense1"}


# ============================================================================ JAX models
class SmallCNN(nn.Module):
  """The 3-conv CNN. Symmetric padding (torch's `padding=1`), ReLUs switchable to guided. Its
  convolutions go through `mtljax.models.convolution` like the project's models', so `--conv`
  (`conv_backend`) reaches them."""

  @nn.compact
  def __call__(self, x):
    pad = ((1, 1), (1, 1))
    conv = convolution.Conv
    x = activations.relu(conv(32, (3, 3), padding=pad, name="conv1")(x))
    x = activations.relu(conv(64, (3, 3), (2, 2), padding=pad, name="conv2")(x))
    x = activations.relu(conv(64, (3, 3), (2, 2), padding=pad, name="conv3")(x))
    return nn.Dense(NUM_CLASSES["cnn"], name="head")(x.mean(axis=(1, 2)))


class EncoderClassifier(nn.Module):
  """A project encoder followed by a linear head (the L3 task of TreeSAT)."""

  encoder: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes, name="head")(self.encoder(x, train=False))


def jax_model(name: str) -> nn.Module:
  if name == "cnn":
    return SmallCNN()
  if name == "resnet18":
    return EncoderClassifier(encoders.ResNet(), NUM_CLASSES[name])
  if name == "mlp":
    return EncoderClassifier(encoders.MLPEncoder(), NUM_CLASSES[name])
  raise ValueError(f"unknown benchmark model {name!r}; known: {', '.join(NUM_CLASSES)}")


def input_shape(name: str, size: int) -> tuple[int, ...]:
  """One example's shape (NHWC for images)."""
  return {"cnn": (size, size, 3), "resnet18": (size, size, 4), "mlp": (540,)}[name]


def init_ensemble(name: str, size: int, members: int, seed: int = 0):
  """`(model, stacked variables [E, ...])` of `members` independently initialised models (BatchNorm
  statistics and the last BN scale of each block randomised, so inference-mode BN is not trivial)."""
  model = jax_model(name)
  x = jnp.zeros((1, *input_shape(name, size)), jnp.float32)

  def one(key):
    k1, k2 = jax.random.split(key)
    v = model.init(k1, x)

    def perturb(path, a):
      where = jax.tree_util.keystr(path)
      k = jax.random.fold_in(k2, hash(where) % (2**31))
      if where.endswith("['mean']"):
        return 0.1 * jax.random.normal(k, a.shape)
      if where.endswith("['var']"):
        return 1.0 + 0.2 * jax.random.uniform(k, a.shape)
      if "bn2" in where and where.endswith("['scale']"):
        # The zero-initialised last BN scale of each block would make every block the identity.
        return 1.0 + 0.1 * jax.random.normal(k, a.shape)
      return a

    return jax.tree_util.tree_map_with_path(perturb, v)

  return model, jax.vmap(one)(jax.random.split(jax.random.key(seed), members))


def member(stacked, i: int):
  return jax.tree.map(lambda a: a[i], stacked)


# ============================================================================ torch mirrors
def _t(a):
  import torch

  return torch.from_numpy(np.array(a, np.float32))


def _conv(w, stride, pad, bias=None):
  import torch

  k = _t(w["kernel"])  # HWIO → OIHW
  m = torch.nn.Conv2d(
    k.shape[2], k.shape[3], k.shape[0], stride=stride, padding=pad, bias=bias is not None
  )
  m.weight.data = k.permute(3, 2, 0, 1).contiguous()
  if bias is not None:
    m.bias.data = _t(bias)
  return m


def _dense(w):
  import torch

  m = torch.nn.Linear(*w["kernel"].shape)
  m.weight.data = _t(w["kernel"]).T.contiguous()
  m.bias.data = _t(w["bias"])
  return m


def _bn(w, s):
  import torch

  m = torch.nn.BatchNorm2d(w["scale"].shape[0], eps=1e-5, momentum=0.1)  # = flax momentum 0.9
  m.weight.data, m.bias.data = _t(w["scale"]), _t(w["bias"])
  m.running_mean.data, m.running_var.data = _t(s["mean"]), _t(s["var"])
  return m


def torch_resnet(p, s):
  """`mtljax.models.encoders.ResNet` (ResNet-18) in torch: params `p` and batch_stats `s` of the
  encoder; returns the pooled features `[B, 512]` of NCHW inputs."""
  import torch

  tnn = torch.nn

  class Block(tnn.Module):
    def __init__(self, w, st, stride):
      super().__init__()
      self.conv1, self.bn1 = _conv(w["conv1"], stride, 1), _bn(w["bn1"], st["bn1"])
      self.relu1 = tnn.ReLU()
      self.conv2, self.bn2 = _conv(w["conv2"], 1, 1), _bn(w["bn2"], st["bn2"])
      self.proj = None
      if "proj_conv" in w:
        self.proj = tnn.Sequential(
          _conv(w["proj_conv"], stride, 0), _bn(w["proj_bn"], st["proj_bn"])
        )
      self.relu2 = tnn.ReLU()

    def forward(self, x):
      y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
      return self.relu2((x if self.proj is None else self.proj(x)) + y)

  class ResNet(tnn.Module):
    def __init__(self):
      super().__init__()
      self.stem = tnn.Sequential(
        _conv(p["stem_conv"], 2, 3),
        _bn(p["stem_bn"], s["stem_bn"]),
        tnn.ReLU(),
        tnn.MaxPool2d(3, 2, 1),
      )
      self.blocks = tnn.Sequential(
        *[
          Block(
            p[f"stage{i + 1}_block{j + 1}"],
            s[f"stage{i + 1}_block{j + 1}"],
            2 if i > 0 and j == 0 else 1,
          )
          for i in range(4)
          for j in range(2)
        ]
      )

    def forward(self, x):
      return self.blocks(self.stem(x)).mean(dim=(2, 3))

  return ResNet()


def torch_mlp(p, dropout: float = 0.0):
  """`MLPEncoder` (3 × Dense → ReLU → Dropout) in torch, flattening its input."""
  import torch

  layers = [torch.nn.Flatten()]
  for i in range(1, 4):
    layers += [_dense(p[f"dense{i}"]), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
  return torch.nn.Sequential(*layers)


def torch_model(name: str, variables) -> Any:
  """The same network in PyTorch (NCHW), with the weights of one member's `variables`, in
  inference mode."""
  import torch

  tnn = torch.nn
  p = variables["params"]
  if name == "cnn":
    model = tnn.Sequential()
    model.conv1 = _conv(p["conv1"], 1, 1, p["conv1"]["bias"])
    model.relu1 = tnn.ReLU()
    model.conv2 = _conv(p["conv2"], 2, 1, p["conv2"]["bias"])
    model.relu2 = tnn.ReLU()
    model.conv3 = _conv(p["conv3"], 2, 1, p["conv3"]["bias"])
    model.relu3 = tnn.ReLU()
    model.pool = tnn.AdaptiveAvgPool2d(1)
    model.flat = tnn.Flatten()
    model.head = _dense(p["head"])
    return model.eval()
  if name == "mlp":
    return tnn.Sequential(torch_mlp(p["encoder"]), _dense(p["head"])).eval()
  model = tnn.Sequential()
  model.encoder = torch_resnet(p["encoder"], variables["batch_stats"]["encoder"])
  model.head = _dense(p["head"])
  return model.eval()


def torch_grad_cam_layer(name: str, model):
  return model.conv3 if name == "cnn" else model.encoder.blocks[-1]


def to_nchw(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if x.ndim == 4 else x


# ============================================================================ timing and output
def device_description() -> dict[str, Any]:
  d = jax.devices()[0]
  info = {
    "backend": jax.default_backend(),
    "device": d.device_kind,
    "jax": jax.__version__,
    "devices": jax.device_count(),
    "cpus": os.cpu_count(),
    "machine": platform.machine(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
      info["cpu_model"] = names[0]
  except OSError:
    pass
  try:
    import torch

    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
  except ImportError:
    pass
  return info


def start_run(args, *, torch_threads: int = 0) -> dict[str, Any]:
  """A benchmark's JSON payload `{"device", "args", "rows"}`, with the device printed; sets
  PyTorch's thread count first when `torch_threads` > 0 (so the payload records it). With a
  `--conv` option (`add_conv_option`) the payload's device also says which convolutions run."""
  if torch_threads:
    import torch

    torch.set_num_threads(torch_threads)
  payload = {"device": device_description(), "args": vars(args), "rows": []}
  if getattr(args, "conv", None):
    payload["device"]["conv"] = resolve_conv(args.conv)
    payload["device"]["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS", "")
  print(payload["device"], flush=True)
  return payload


def add_conv_option(ap) -> None:
  """`--conv auto|xla|onednn`: the convolutions of the JAX models (`config.conv`'s values)."""
  ap.add_argument(
    "--conv",
    default="auto",
    choices=convolution.BACKENDS,
    help="the JAX side's convolutions: oneDNN's kernels, XLA's, or oneDNN where it loads (auto)",
  )


def resolve_conv(conv: str) -> str:
  """The kernels `conv` runs here ("onednn" or "xla"); exits with one line when "onednn" was
  asked for and the library does not load (a benchmark must not time XLA under oneDNN's name)."""
  if conv == "xla":
    return "xla"
  from mtljax.models import onednn

  if onednn.available():
    return "onednn"
  if conv == "onednn":
    raise SystemExit("error: --conv onednn: the oneDNN convolutions do not load here (see above)")
  return "xla"


def conv_backend(conv: str):
  """The context in which the JAX side is traced: every `convolution.Conv` of the benchmark
  models runs `conv`'s kernels (read at trace time, so the first call must happen inside)."""
  return convolution.use(resolve_conv(conv))


def time_side_by_side(
  fns: dict[str, Callable[[], Any]],
  repeats: int = 3,
  block: Callable[[Any], Any] = jax.block_until_ready,
) -> dict[str, dict]:
  """Warm every function once (compilation), then run them interleaved `repeats` times (A B C A B
  C ...) so that a slow phase of a shared machine hits all alike; report the median seconds.
  `block` waits for a result: `jax.block_until_ready` waits for every jax array in a returned
  pytree and passes anything else (torch tensors, already computed) through."""
  out = {}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    block(fn())
    out[name] = {"first_call_s": time.perf_counter() - t0, "runs_s": []}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      block(fn())
      out[name]["runs_s"].append(time.perf_counter() - t0)
  for r in out.values():  # repeats=0: the first call (compilation included) is all there is
    r["median_s"] = statistics.median(r["runs_s"] or [r["first_call_s"]])
  return out


def captum_attribution(model, name: str, method: str, x, target, a):
  """Captum's attributions of a torch twin for `method` (`ig`: Integrated Gradients with the
  riemann-middle rule, `a.ig_steps` steps in chunks of `a.ig_chunk`; `saliency`: |∂/∂x|;
  `gradcam`: Grad-CAM at the model's `torch_grad_cam_layer`, `[B, h, w]`) for `target` `[B]`."""
  from captum import attr as cattr

  if method == "ig":
    return cattr.IntegratedGradients(model).attribute(
      x, target=target, n_steps=a.ig_steps, method="riemann_middle",
      internal_batch_size=(a.ig_chunk or a.ig_steps) * x.shape[0],
    )  # fmt: skip
  if method == "saliency":
    return cattr.Saliency(model).attribute(x, target=target, abs=True)
  if method == "gradcam":
    layer = torch_grad_cam_layer(name, model)
    return cattr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)[
      :, 0
    ]
  raise ValueError(f"no Captum twin for method {method!r}")


def max_rel_diff(a, ref) -> float:
  """max |a − ref| relative to max |ref| (guarded against an all-zero reference)."""
  a, ref = np.asarray(a), np.asarray(ref)
  return float(np.max(np.abs(a - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
  """Markdown table of `rows` with `(key, header)` columns; floats printed with 3 significant."""

  def fmt(v):
    if isinstance(v, float):
      return f"{v:.3g}"
    return "–" if v is None else str(v)

  lines = [
    "| " + " | ".join(h for _, h in columns) + " |",
    "|" + "|".join("---" for _ in columns) + "|",
  ]
  lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
  text = "\n".join(lines)
  print(text, flush=True)
  return text


def write_json(path: str, payload: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(payload, f, indent=1, default=float)
  print(f"wrote {path}", flush=True)
