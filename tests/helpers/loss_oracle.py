"""The training loss without the step around it: `(params, batch_stats, batch, rng) -> (loss,
(logs, new_batch_stats))` of the configured objective, for tests that differentiate it by
themselves (on a mesh, against hand-written module losses)."""

from mtljax import hierarchy
from mtljax import objective as objective_lib
from mtljax.train import steps


def make_loss_fn(model, config, target_stats):
  """The objective's sum of terms and every term's logs, from one forward pass."""
  objective = objective_lib.build(config)
  transform = hierarchy.output_transform(config)
  context_fn = steps._make_context_fn(model, objective, target_stats, transform)

  def loss_fn(params, batch_stats, batch, rng, weighting_state=None):
    ctx, new_batch_stats = context_fn(params, batch_stats, batch, rng, weighting_state)
    total, logs = objective(ctx)
    return total, (logs, new_batch_stats)

  return loss_fn
