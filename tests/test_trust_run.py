"""The trust metrics inside `--mode=explain`, end to end: a tiny attribute ensemble trained once by
the project's own command, explained with every registered metric on Saliency and Grad-CAM (the
files read back, checked for finite values and against a recomputation from the saved maps); a
toy metric added by one `register` call and seen in the run's files; and the time-series run
refusing the (image-only) metrics with one error line."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from mtljax.attribution.trust import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANT = "configs/attributes.py:tiny,size=2"
# Small settings: the run's structure is what is tested, not the metrics' resolution.
SMALL = (
  "--config.explain.max_examples=4",
  "--config.explain.batch_size=4",
  "--config.explain.trust.samples=2",
  "--config.explain.trust.mprt_groups=2",
  "--config.explain.trust.steps=4",
  "--config.explain.trust.runs=4",
  "--config.explain.trust.road_percentages=(20,60)",
)
ALWAYS_DEFINED = ("deletion", "insertion", "pixel_flipping", "region_perturbation", "road")
ALWAYS_DEFINED += ("local_lipschitz",)


def _main(workdir, *args, config=VARIANT, timeout=900):
  cmd = [sys.executable, "-m", "mtljax.main", f"--config={config}", f"--workdir={workdir}", *args]
  env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = tmp_path_factory.mktemp("trust_run") / "run"
  res = _main(work, "--config.train.num_epochs=1")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return work


def _gini(a):
  """Sparseness (Gini index of |map| + 1e-7), written out in numpy."""
  a = np.sort(np.abs(a).reshape(len(a), -1) + 1e-7, axis=-1)
  n = a.shape[-1]
  k = np.arange(1, n + 1)
  return ((2 * k - n - 1) * a).sum(-1) / (n * a.sum(-1))


@pytest.mark.slow
def test_every_registered_metric_runs_in_the_explain_run(trained):
  methods = ("saliency", "grad_cam")
  res = _main(
    trained,
    "--mode=explain",
    f"--config.explain.methods={methods}",
    "--config.explain.metrics=('all',)",
    *SMALL,
  )
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  out = trained / "explanations" / "test"
  summary = json.loads((out / "results.json").read_text())
  for name in methods:
    trust = summary["methods"][name]["trust"]
    maps = np.load(out / f"maps_{name}.npz")
    z = np.load(out / f"trust_{name}.npz")
    ran = set(registry.TRUST_METRICS) - set(trust["skipped"])
    # The re-run metrics (the crash) and deletion are never skipped here.
    assert {"mprt", "max_sensitivity", "local_lipschitz", "random_logit", "deletion"} <= ran
    for metric in ran:
      member, ens = z[f"member_{metric}"], z[f"ensemble_{metric}"]
      assert member.shape == (2, len(maps["pairs"])) and ens.shape == member.shape[1:]
      # Correlations and ratios are NaN where a map is constant (a zero Grad-CAM map) or a
      # target has no mask; the removal curves and the Lipschitz estimate are always defined.
      if metric in ALWAYS_DEFINED:
        assert np.isfinite(member).all() and np.isfinite(ens).all(), (name, metric)
      assert np.isfinite(ens).any() and metric in trust["compare"], (name, metric)
    # The ensemble's sparseness recomputed from its saved map.
    np.testing.assert_allclose(z["ensemble_sparseness"], _gini(maps["ensemble"]), rtol=1e-4)
    assert len(trust["mprt_curve"]["members"]) == 2  # mprt_groups stops
    assert np.all(np.abs(z["ensemble_max_sensitivity"]) < 1e3)
  assert "Trust metrics" in (out / "table.md").read_text()


@pytest.fixture
def toy_metric():
  def mean_abs(inputs):
    """The toy: the mean |map| of each target `[..., B]`."""
    return jnp.abs(inputs.maps).mean((-2, -1))

  metric = registry.register("mean_abs", registry.TrustMetric(mean_abs, "complexity"))
  try:
    yield metric
  finally:
    registry.TRUST_METRICS.pop("mean_abs")


@pytest.mark.slow
def test_a_registered_metric_is_computed_and_written(trained, toy_metric):
  from configs import attributes
  from mtljax.explain import run

  with pytest.raises(ValueError, match="already registered"):
    registry.register("mean_abs", toy_metric)
  config = attributes.get_config("tiny,size=2")
  config.train.num_epochs = 1
  config.explain.methods = ("saliency",)
  config.explain.metrics = ("mean_abs",)
  config.explain.max_examples = 4
  config.explain.batch_size = 4
  summary = run.explain_workdir(config, str(trained))
  out = trained / "explanations" / "test"
  maps = np.load(out / "maps_saliency.npz")
  z = np.load(out / "trust_saliency.npz")
  np.testing.assert_allclose(z["ensemble_mean_abs"], np.abs(maps["ensemble"]).mean((1, 2)), 1e-5)
  shown = maps["members"]  # [E, first pairs, H, W]
  np.testing.assert_allclose(
    z["member_mean_abs"][:, : shown.shape[1]], np.abs(shown).mean((2, 3)), rtol=1e-5
  )
  assert "mean_abs" in summary["methods"]["saliency"]["trust"]["compare"]


def test_the_toy_metric_is_gone_afterwards():
  assert "mean_abs" not in registry.TRUST_METRICS


@pytest.mark.slow
def test_the_time_series_run_refuses_trust_metrics(tmp_path):
  """Trust metrics perturb image pixels: asked of the time-series run, one error line, exit 2,
  before any attribution."""
  cy = "configs/cropyield.py:tiny"
  res = _main(tmp_path / "cy", "--config.train.num_epochs=1", config=cy, timeout=600)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  res = _main(
    tmp_path / "cy", "--mode=explain", "--config.explain.metrics=('deletion',)", config=cy
  )
  assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-3000:]
  lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
  assert lines[-1].startswith("error: ") and "time-series" in lines[-1], res.stderr[-2000:]
  assert "Traceback" not in res.stderr
  assert not (tmp_path / "cy" / "explanations").exists()
