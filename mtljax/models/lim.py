"""Multitask classification with label interdependency modelling (MTC-LIM paper §2.3, Table 2).

Four modules, each supervised by its own loss (Fig. 5):

* **BL** (L1): a shared CNN with global average pooling, ``x_BL [B, D]``, and one softmax head per
  task giving the interim probabilities ``P(Y_T | x_BL)`` (Eq. 1–2).
* **CLIM** (L2): all tasks' class probabilities as ONE sequence of ``S = Σ_t K_t`` steps with one
  value per step (Eq. 12), through a stacked RNN *per task* (a bidirectional GRU, then a GRU, both
  32 units); the last hidden state is the task's interdependency representation, followed by an
  interim softmax head.
* **TLIM** (L3): the tasks as steps, each step the task's probability vector zero-padded to
  ``Kmax`` (Eq. 13), through the same kind of RNN per task with 12 units, and interim heads.
* **FC** (L4): the fused feature vector of Table 2 (``x_BL``, the RNN representations and, with
  multitask stacking MS, the interim probabilities: MS_BL adds ``P(Y_T | x_BL)``, MS_ALL also those
  of CLIM / TLIM) → one softmax layer per task: the final outputs.

GRUs are flax's ``nn.GRUCell`` in ``nn.RNN`` / ``nn.Bidirectional`` with Glorot-uniform input
and recurrent kernels (paper §3); fully connected layers are He
normal (§3). Variants (``VARIANTS``): STC, BL, BL-MS, CLIM, CLIM-MS_BL, CLIM-MS_ALL, TLIM,
TLIM-MS_BL, TLIM-MS_ALL, LIM, LIM-MS_BL, LIM-MS_ALL. STC (single-task classification) is one
independent CNN + softmax head per task inside one module: their losses are summed and nothing is
shared, so one run trains the T single-task models together (only the global-norm gradient
clipping couples them).

``apply`` returns ``(outputs, intermediates)``: ``outputs = {task: final logits}``;
``intermediates = {"enc/image", "fused", "aux_outputs": {module: {task: logits}}}`` where
``aux_outputs`` holds the interim supervised outputs ("bl", "clim", "tlim"), whose losses
``losses.auxiliary_loss`` adds to the total (L_MTC-LIM = Σ_m L_m, §2.3.6).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mtljax import tasks as tasks_lib
from mtljax.errors import ConfigError
from mtljax.models import convolution
from mtljax.models.encoders import ENCODERS

VARIANTS = (
  "STC",
  "BL",
  "BL-MS",
  "CLIM",
  "CLIM-MS_BL",
  "CLIM-MS_ALL",
  "TLIM",
  "TLIM-MS_BL",
  "TLIM-MS_ALL",
  "LIM",
  "LIM-MS_BL",
  "LIM-MS_ALL",
)

_dense_init = nn.initializers.he_normal()


def parse_variant(name: str) -> dict[str, Any]:
  """``{"stc", "clim", "tlim", "fc", "ms"}`` of a Table 2 configuration; ms is None, "BL" or "ALL".

  Raises:
    ConfigError: for a name not in ``VARIANTS``.
  """
  if name not in VARIANTS:
    raise ConfigError(
      f"config.model.variant={name!r} is not one of the MTC-LIM configurations {list(VARIANTS)}"
    )
  base, _, ms = name.partition("-")
  ms = {"": None, "MS": "BL", "MS_BL": "BL", "MS_ALL": "ALL"}[ms]
  return {
    "stc": base == "STC",
    "clim": base in ("CLIM", "LIM"),
    "tlim": base in ("TLIM", "LIM"),
    "fc": name not in ("STC", "BL"),
    "ms": ms,
  }


class StackedGRU(nn.Module):
  """A bidirectional GRU followed by a unidirectional GRU (paper §2.3.3, Eq. 9–11), both of
  ``units``; ``[B, S, F] -> [B, units]``, the last hidden state of the second GRU."""

  units: int
  # Time steps per scan iteration (the sequences are short: 18 class steps, 5 task steps).
  unroll: int = 1

  @nn.compact
  def __call__(self, z):
    # Glorot-uniform input AND recurrent kernels (paper §3). Not flax's orthogonal recurrent
    # default: its QR, batched over ensemble members × tasks, hung jax's CPU LAPACK kernel
    # (ParallelBatchMap, all threads waiting) in the vmapped ensemble init here.
    glorot = nn.initializers.glorot_uniform()
    cell = lambda name: nn.GRUCell(
      self.units, kernel_init=glorot, recurrent_kernel_init=glorot, name=name
    )
    rnn = lambda cell_name, **kw: nn.RNN(cell(cell_name), unroll=self.unroll, **kw)
    h = nn.Bidirectional(rnn("fwd_cell"), rnn("bwd_cell"), name="bigru")(z)  # [B, S, 2 units]
    carry, _ = rnn("gru_cell", return_carry=True, name="gru")(h)
    return carry


def _per_task_rnns(units: int, num_tasks: int, name: str) -> nn.Module:
  """T StackedGRUs with their own parameters (a leading task axis), applied to the same input
  sequence in one vmapped program: ``[B, S, F] -> [T, B, units]`` (one scan per GRU, not T)."""
  return nn.vmap(
    StackedGRU,
    variable_axes={"params": 0},
    split_rngs={"params": True},
    in_axes=None,
    out_axes=0,
    axis_size=num_tasks,
  )(units, name=name)


class LIMModel(nn.Module):
  """The MTC-LIM model of one Table 2 configuration (see the module docstring).

  Attributes:
    encoder: the shared CNN front end (a fresh copy per task for STC, from ``encoder_fn``).
    num_classes: ``{task: K_t}``; tasks are processed in sorted name order.
    variant: one of ``VARIANTS``.
  """

  encoder_cls: Any
  encoder_kwargs: Mapping[str, Any]
  num_classes: Mapping[str, int]
  variant: str = "LIM-MS_ALL"
  modality: str = "image"
  clim_units: int = 32
  tlim_units: int = 12
  # The convolution backend (`config.conv`; mtljax/models/convolution.py), applied at trace time.
  conv: str = "xla"

  def __call__(self, inputs: Mapping[str, Any], *, train: bool):
    with convolution.use(self.conv):
      return self._call(inputs, train=train)

  @nn.compact
  def _call(self, inputs: Mapping[str, Any], *, train: bool):
    v = parse_variant(self.variant)
    tasks = sorted(self.num_classes)
    x = inputs[self.modality]
    head = lambda t, name: nn.Dense(self.num_classes[t], kernel_init=_dense_init, name=name)
    if v["stc"]:  # one independent CNN + head per task
      feats = {
        t: self.encoder_cls(**self.encoder_kwargs, name=f"stc_encoder_{t}")(x, train=train)
        for t in tasks
      }
      outputs = {t: head(t, f"stc_head_{t}")(feats[t]) for t in tasks}
      inter = {f"enc/{self.modality}/{t}": f for t, f in feats.items()}
      return outputs, inter

    feat = self.encoder_cls(**self.encoder_kwargs, name="encoder")(x, train=train)  # x_BL
    bl = {t: head(t, f"bl_head_{t}")(feat) for t in tasks}
    inter = {f"enc/{self.modality}": feat}
    if not v["fc"]:  # BL: the BL heads are the final outputs
      inter["fused"] = feat
      return bl, inter

    p_bl = {t: jax.nn.softmax(bl[t], axis=-1) for t in tasks}
    aux = {"bl": bl}
    reps, stacked = [feat], []
    if v["ms"]:
      stacked += [p_bl[t] for t in tasks]  # MS_BL (Eq. 3)
    if v["clim"]:
      z = jnp.concatenate([p_bl[t] for t in tasks], axis=-1)[..., None]  # [B, S, 1] (Eq. 12)
      r = dict(zip(tasks, _per_task_rnns(self.clim_units, len(tasks), "clim_rnn")(z)))
      aux["clim"] = {t: head(t, f"clim_head_{t}")(r[t]) for t in tasks}
      reps += [r[t] for t in tasks]
      if v["ms"] == "ALL":
        stacked += [jax.nn.softmax(aux["clim"][t], axis=-1) for t in tasks]
    if v["tlim"]:
      kmax = max(self.num_classes.values())
      z = jnp.stack(
        [jnp.pad(p_bl[t], ((0, 0), (0, kmax - p_bl[t].shape[-1]))) for t in tasks], axis=1
      )  # [B, T, Kmax], zero-padded (Eq. 13)
      r = dict(zip(tasks, _per_task_rnns(self.tlim_units, len(tasks), "tlim_rnn")(z)))
      aux["tlim"] = {t: head(t, f"tlim_head_{t}")(r[t]) for t in tasks}
      reps += [r[t] for t in tasks]
      if v["ms"] == "ALL":
        stacked += [jax.nn.softmax(aux["tlim"][t], axis=-1) for t in tasks]
    fused = jnp.concatenate(reps + stacked, axis=-1)
    outputs = {t: head(t, f"fc_head_{t}")(fused) for t in tasks}
    inter.update(fused=fused, aux_outputs=aux)
    return outputs, inter


def build_lim_model(config: ml_collections.ConfigDict) -> LIMModel:
  """The LIMModel of `config.model.variant` on the single image input of `config.inputs`."""
  variant = config.model.variant
  parse_variant(variant)
  if len(config.inputs) != 1:
    raise ConfigError(
      f"config.model.variant={variant!r} (MTC-LIM) takes exactly one "
      f"image input; config.inputs has {sorted(config.inputs)}"
    )
  modality, mcfg = next(iter(config.inputs.items()))
  # The LIM modules exchange one class distribution per example and task.
  bad = [t for t, c in config.tasks.items() if not tasks_lib.is_per_example_class(c.kind)]
  if bad:
    raise ConfigError(
      f"config.model.variant={variant!r} (MTC-LIM) needs classification tasks; {bad} are not"
    )
  kwargs = mcfg.get("encoder_kwargs")
  kwargs = {
    k: tuple(x) if isinstance(x, list) else x
    for k, x in (kwargs.to_dict() if kwargs is not None else {}).items()
  }
  return LIMModel(
    encoder_cls=ENCODERS[mcfg.encoder],
    encoder_kwargs=kwargs,
    num_classes={t: int(c.num_classes) for t, c in config.tasks.items()},
    variant=variant,
    modality=modality,
    clim_units=int(config.model.get("clim_units", 32)),
    tlim_units=int(config.model.get("tlim_units", 12)),
    conv=config.get("conv", "xla"),
  )
