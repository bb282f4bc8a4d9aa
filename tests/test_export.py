"""`--mode=export` (mtljax/predict/export.py): the artifact runs in a fresh process that never
imports mtljax (jax + numpy, via the copied load.py), at two batch sizes, on raw inputs, and
matches `--mode=predict` to float tolerance; an untrained workdir is one `error:` line."""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import PREDICT_CONFIG, PREDICT_FLAGS, predict_config
from helpers.commands import run_main

_FRESH = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import load
model = load.Model(sys.argv[1])
with np.load(sys.argv[2]) as f:
  raw = {k: f[k] for k in f.files}
first = model({k: v[:5] for k, v in raw.items()})
rest = model({k: v[5:] for k, v in raw.items()})
assert not any(m == "mtljax" or m.startswith("mtljax.") for m in sys.modules), "mtljax imported"
np.savez(sys.argv[3], **{k: np.concatenate([first[k], rest[k]]) for k in first})
"""


def _run(work, *flags):
  return run_main(work, *PREDICT_FLAGS, *flags, config=PREDICT_CONFIG)


def test_the_export_runs_without_mtljax_and_matches_predict(predict_workdir, tmp_path):
  from mtljax.data import build

  for mode in ("export", "predict"):
    res = _run(predict_workdir, f"--mode={mode}", "--config.predict.name=export-check")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  out = predict_workdir / "export"
  description = json.loads((out / "model.json").read_text())
  assert [i["name"] for i in description["inputs"]] == ["aerial", "s1", "s2"]
  assert description["inputs"][0]["shape"] == ["b", 32, 32, 4]
  assert description["ensemble_size"] == 3 and "cpu" in description["platforms"]
  assert len(description["tasks"]["l3"]["class_names"]) == 15
  # Raw inputs, as the reader gives them (not standardised): the artifact standardises them.
  c = predict_config()
  source = build.make_sources(c, str(predict_workdir))[0]["test"]
  raw = {m: np.stack([source[i]["inputs"][m] for i in range(len(source))]) for m in c.inputs}
  np.savez(tmp_path / "raw.npz", **raw)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  script = [
    sys.executable,
    "-c",
    _FRESH,
    str(out),
    str(tmp_path / "raw.npz"),
    str(tmp_path / "o.npz"),
  ]
  res = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  got = np.load(tmp_path / "o.npz")
  want = np.load(predict_workdir / "predict" / "export-check" / "predictions.npz")
  assert {o["name"] for o in description["outputs"]} == set(got.files)
  for k in got.files:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_exporting_an_untrained_workdir_is_one_error_line(tmp_path):
  os.makedirs(tmp_path / "empty")
  res = _run(tmp_path / "empty", "--mode=export")
  assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-2000:]
  assert res.stderr.startswith("error: --mode=export:") and "train first" in res.stderr
