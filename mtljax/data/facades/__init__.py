"""Street-level façades: five interdependent classification tasks (MTC-LIM paper).

``reader``: the documented format (its docstring) and ``FacadesSource``; ``labelsets``: LPRUS and
the labelset-based, block-disjoint split; ``synthetic``: the generator with planted label
interdependencies. ``DATASET`` is its registry entry.
"""

from __future__ import annotations

from typing import Any

from mtljax.data import Dataset
from mtljax.data.facades.reader import FacadesSource
from mtljax.data.facades.synthetic import write_synthetic_facades


def _source_kwargs(config) -> dict[str, Any]:
  d = config.data
  return dict(
    image_size=d.image_size,
    lprus_keep=d.lprus_keep,
    fractions=tuple(d.fractions),
    split_seed=d.split_seed,
  )


def _synthetic_kwargs(config) -> dict[str, Any]:
  s = config.data.synthetic
  return dict(
    num_images=s.num_images,
    num_blocks=s.num_blocks,
    image_size=config.data.image_size,
    cue_noise=s.cue_noise,
    label_noise=s.label_noise,
    seed=s.seed,
  )


DATASET = Dataset(
  name="facades",
  source_cls=FacadesSource,
  write_synthetic=write_synthetic_facades,
  source_kwargs=_source_kwargs,
  synthetic_kwargs=_synthetic_kwargs,
)
