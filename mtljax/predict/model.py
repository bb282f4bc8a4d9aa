"""The prediction function of a trained workdir: restored ensemble → per-task outputs and
uncertainty, the one function both `--mode=predict` and `--mode=export` run.

`make_predict_fn(...)` returns a pure `(variables, inputs) -> {"<task>/<key>": array}` where
`variables = {"params", "batch_stats"}` carry the ensemble's leading member axis E and the keys
are `uncertainty.summarise`'s. With `input_stats` the function takes *raw* inputs (as a reader
returns them, any dtype, NaN as nodata) and standardises them itself exactly as the host pipeline
does (`mtljax.data.pipeline.normalize`): that is the exported form; predict mode feeds batches the
pipeline has already standardised.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import checkpoint, configlib, hierarchy, tasks, train
from mtljax.checkpoint import Checkpointer
from mtljax.predict import uncertainty
from mtljax.train.steps import target_transform


class PredictError(configlib.ConfigError):
  """A predict or export request that cannot run (no checkpoint, inputs that do not fit)."""


def restore(config, s, which: str = "best"):
  """`(state, meta)` of checkpoint `which` ("best" or "latest") of the workdir `s.workdir`."""
  if which not in ("best", "latest"):
    raise PredictError(f"config.predict.checkpoint={which!r} must be 'best' or 'latest'")
  folder = os.path.join(s.workdir, "checkpoints")
  if not os.path.isdir(os.path.join(folder, which)):
    raise PredictError(f"{s.workdir}: no checkpoints/{which}; train first (--mode=train)")
  ckpt = Checkpointer(
    folder,
    keep=config.train.keep_checkpoints,
    verify=config.train.get("verify_checksums", "all"),
    record=checkpoint.config_record(config),
  )
  try:
    restored = (ckpt.restore_best if which == "best" else ckpt.restore_latest)(s.abstract_state)
  except checkpoint.CheckpointDamagedError:  # one line naming the damaged step (mtljax/main.py)
    raise
  except Exception as e:  # a checkpoint of another shape (another ensemble size, model)
    raise PredictError(
      f"{s.workdir}/checkpoints/{which} does not hold the model of this config "
      f"(config.ensemble.size={train.ensemble_size(config)}): {str(e)[:300]}"
    ) from e
  finally:
    ckpt.close()
  if restored is None:
    raise PredictError(f"{s.workdir}/checkpoints/{which} holds no checkpoint; train first")
  return restored


def variables_of(state) -> dict:
  """The stacked `{"params", "batch_stats"}` of a restored train state (numpy, host)."""
  return jax.tree.map(np.asarray, {"params": state["params"], "batch_stats": state["batch_stats"]})


def standardize(inputs: Mapping, input_stats: Mapping | None) -> dict:
  """jax twin of `pipeline.normalize` (host side): per-channel `(x - mean) / std` of the inputs
  with statistics, float32 for the others, NaN and infinities as 0.0 (= the channel mean); a time
  series `{"values", "days", "mask"}` standardised per feature with padded steps 0.0."""
  out = {}
  for name, x in inputs.items():
    st = (input_stats or {}).get(name)
    mean, std = (
      (jnp.asarray(st["mean"], jnp.float32), jnp.asarray(st["std"], jnp.float32)) if st else (0, 1)
    )
    if isinstance(x, Mapping):
      mask = x["mask"].astype(jnp.int32)
      v = (x["values"].astype(jnp.float32) - mean) / std
      v = jnp.where(jnp.isfinite(v) & (mask[..., None] > 0), v, 0.0)
      out[name] = {"values": v, "days": x["days"].astype(jnp.int32), "mask": mask}
      continue
    v = x.astype(jnp.float32)
    if st:
      v = (v - mean) / std
    out[name] = jnp.where(jnp.isfinite(v), v, 0.0)
  return out


def make_predict_fn(s, *, raw_inputs: bool = False):
  """The pure prediction function of the run set up as `s` (a `train.Setup`); `raw_inputs`:
  standardise inside with the workdir's statistics (the exported form)."""
  config = s.config
  size = train.ensemble_size(config)
  specs = {t: s.config.tasks[t] for t in s.task_names}
  _, from_model = target_transform(s.target_stats)
  transform = s.output_transform or hierarchy.output_transform(config)
  stats = s.stats["inputs"] if raw_inputs else None

  def member(variables, inputs):
    outputs, _ = s.model.apply(variables, inputs, train=False)
    outputs = from_model(transform(outputs))
    return {t: tasks.of(c).activation(outputs[t]) for t, c in specs.items()}

  def predict(variables, inputs):
    if raw_inputs:
      inputs = standardize(inputs, stats)
    members = train.member_map(member, size, (0, None))(variables, inputs)  # {task: [E, B, ...]}
    return uncertainty.summarise(specs, members)

  return predict
