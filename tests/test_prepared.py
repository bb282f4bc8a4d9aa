"""Prepared datasets (mtljax.data.prepared, python -m mtljax.prepare): records round-trip exactly,
a prepared split gives the raw reader's examples and training batches bit for bit, a killed
conversion resumes, and a prepared folder that does not fit is refused naming why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import grain
import numpy as np
import pytest

from configs import treesat
from mtljax import tasks
from mtljax.data import build, pipeline, prepared
from mtljax.data.prepared import convert, records
from mtljax.data.prepared import identity as prepared_identity
from mtljax.data.source import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RO = grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)


def _std(config):
  return tasks.standardized_targets(config)


def tiny_config(raw_dir, **data):
  config = treesat.get_config("tiny")
  config.data.synthetic.dir = str(raw_dir)
  config.data.synthetic.num_train, config.data.synthetic.num_test = 48, 16
  config.data.stats_examples = 32
  for k, v in data.items():
    config.data[k] = v
  return config


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  base = tmp_path_factory.mktemp("prepared")
  config = tiny_config(base / "raw")
  convert.convert(
    config, str(base / "out"), shard_size=16, workers=1, progress=False, standardized=_std(config)
  )
  raw, _ = build.make_sources(config, str(base))
  return config, str(base / "out"), raw


def assert_same(a, b, path=""):
  if isinstance(a, dict):
    assert set(a) == set(b), path
    for k in a:
      assert_same(a[k], b[k], f"{path}/{k}")
  else:
    a, b = np.asarray(a), np.asarray(b)
    assert (a.dtype, a.shape) == (b.dtype, b.shape), path
    np.testing.assert_array_equal(a, b, err_msg=path)


def test_record_round_trip_is_exact():
  example = {
    "inputs": {
      "img": np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 10,  # integers: stored as uint8
      "s1": np.array([[-3.5, np.nan], [1e6, 0.0]], np.float32),  # kept float32 (NaN, fraction)
      "ts": {"values": np.ones((3, 2), np.float64) * -200, "days": np.arange(3, dtype=np.int32)},
    },
    "targets": {"l3": np.int32(4), "r": np.float32(2.5)},
    "mask": {"l3": np.float32(1)},
    "meta": {"index": np.int32(7), "name/with/slash": np.zeros(0, np.float32)},
    "annotations": {"masks": {"a/b": np.ones((2, 2), bool), "none": None}},
  }
  rec = records.encode(example)
  back = records.decode(rec)
  del example["annotations"]["masks"]["none"]  # None leaves are left out
  assert_same(example, back)
  assert b'"|u1", "<f4", [2, 3, 4]' in rec  # the integer-valued image is stored as uint8
  back["inputs"]["img"][0, 0, 0] = 1  # writable
  stored = records.decode(rec, stored_inputs=True)  # what the pipelines read: uint8 kept
  assert stored["inputs"]["img"].dtype == np.uint8 and stored["inputs"]["s1"].dtype == np.float32
  np.testing.assert_array_equal(stored["inputs"]["img"], example["inputs"]["img"])
  assert stored["inputs"]["ts"]["values"].dtype == np.float64  # only plain array inputs kept


def test_prepared_gives_the_raw_examples_batches_and_statistics(converted):
  config, out, raw = converted
  config = config.copy_and_resolve_references()
  config.data.prepared = out
  prep, _ = build.make_sources(config, out)
  for split, src in raw.items():
    p = prep[split]
    assert len(p) == len(src) and list(p.names) == list(src.names)
    assert p.check_files(full=True) == len(src)
    for i in range(len(src)):
      assert_same(src[i], p[i])
    assert_same(src.label_arrays(), p.label_arrays())
  names = ["aerial", "s1", "s2"]
  kw = dict(input_names=names, task_names=["l3", "age"], batch_size=8, seed=3, read_options=RO)
  stats = pipeline.compute_stats(raw["train"], names, max_examples=32, seed=config.seed)
  assert prepared.statistics(config, names) == stats  # saved at conversion, identical
  a = pipeline.train_iterator(raw["train"], stats=stats, augment_cfg=True, **kw)
  b = pipeline.train_iterator(prep["train"], stats=stats, augment_cfg=True, **kw)
  for _ in range(7):  # crosses an epoch (6 batches of 8)
    assert_same(next(a), next(b))
  assert prep["train"].stored_inputs()[0]["inputs"]["aerial"].dtype == np.uint8  # fast path used
  del kw["seed"]
  ev = lambda s: list(pipeline.eval_batches(s, stats=stats, **kw))
  ea, eb = ev(raw["test"]), ev(prep["test"])
  assert len(ea) == len(eb) >= 1
  for x, y in zip(ea, eb):
    assert_same(x, y)


def test_integer_inputs_standardised_in_the_step_give_the_host_values(converted):
  """`on_device`: the prepared 8-bit aerial tiles travel as uint8 and `standardize_on_device`
  (inside a jitted step) gives the host path's float32 values bit for bit."""
  import jax

  from mtljax import train

  config, out, raw = converted
  prep = records.PreparedSource(out, "train")
  names = ["aerial", "s1", "s2"]
  stats = pipeline.compute_stats(raw["train"], names, max_examples=32, seed=config.seed)
  kw = dict(input_names=names, task_names=["l3"], stats=stats, batch_size=8, seed=2,
            augment_cfg=True, read_options=RO)  # fmt: skip
  host = pipeline.train_iterator(raw["train"], **kw)
  dev = pipeline.train_iterator(prep, on_device=True, **kw)
  step = jax.jit(train.on_device_inputs(lambda state, batch: batch["inputs"], stats))
  for _ in range(3):
    a, b = next(host), next(dev)
    assert b["inputs"]["aerial"].dtype == np.uint8  # a quarter of the bytes
    assert b["inputs"]["s1"].dtype == np.float32  # float inputs are standardised on the host
    assert_same(a["targets"], b["targets"])
    assert_same(a["inputs"], jax.device_get(step(None, b)))
    assert_same(a["inputs"], jax.device_get(step(None, a)))  # host-normalised: unchanged
  kw.pop("seed"), kw.pop("augment_cfg")
  ev = lambda src, **o: next(pipeline.eval_batches(src, **kw, **o))
  a, b = ev(raw["test"]), ev(records.PreparedSource(out, "test"), on_device=True)
  assert b["inputs"]["aerial"].dtype == np.uint8
  assert_same(a["inputs"], jax.device_get(step(None, b)))


def test_grain_worker_processes_give_the_same_batches(converted):
  from absl import flags

  parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.mark_as_parsed()  # grain's mp_prefetch reads absl flags (as under absl.app.run)
  try:
    _, out, _ = converted
    src = records.PreparedSource(out, "train")
    kw = dict(input_names=["aerial", "s1"], task_names=["l3"], stats=None, batch_size=8, seed=1,
              augment_cfg=True, read_options=RO)  # fmt: skip
    a = pipeline.train_iterator(src, workers=0, **kw)
    b = pipeline.train_iterator(src, workers=2, **kw)
    for _ in range(8):  # two worker processes, across an epoch boundary
      assert_same(next(a), next(b))
    del b
  finally:
    if not parsed:
      flags.FLAGS.unparse_flags()


def test_refuses_a_prepared_folder_that_does_not_fit(converted, tmp_path):
  config, out, _ = converted
  other = tiny_config(config.data.synthetic.dir, prepared=out, aerial_size=16)
  with pytest.raises(DataError, match=r"source_kwargs\.aerial_size \(32 there, 16 now\)"):
    prepared.open_sources(other)
  from configs import facades

  fac = facades.get_config(None)
  fac.data.prepared = out
  with pytest.raises(DataError, match=r"dataset \('treesat' there, 'facades' now\)\. Convert"):
    prepared.open_sources(fac)
  with pytest.raises(convert.PrepareError, match="another dataset or config"):
    convert.convert(
      other, out, workers=1, progress=False, standardized=_std(other)
    )  # nothing overwritten
  assert os.path.exists(os.path.join(out, records.MANIFEST))
  # Prepared from a real archive: a config without data.root trains from it; another root not.
  real = json.load(open(os.path.join(out, records.MANIFEST)))
  real["archive"], real["synthetic"] = "/data/TreeSatAI", None
  plain = tiny_config("/elsewhere", prepared=out)
  assert prepared_identity.mismatch(real, plain) == []
  plain.data.root = "/data/other"
  assert prepared_identity.mismatch(real, plain) == [
    "archive ('/data/TreeSatAI' there, '/data/other' now)"
  ]
  # A missing split, a damaged shard, a half-written conversion.
  copy = str(tmp_path / "copy")
  shutil.copytree(out, copy)
  manifest = json.load(open(os.path.join(copy, records.MANIFEST)))
  del manifest["splits"]["val"]
  json.dump(manifest, open(os.path.join(copy, records.MANIFEST), "w"))
  config = config.copy_and_resolve_references()
  config.data.prepared = copy
  with pytest.raises(DataError, match="no split 'val'"):
    prepared.open_sources(config)
  shard = os.path.join(copy, "test", "shard-00000.array_record")
  with open(shard, "r+b") as f:
    f.seek(100)
    f.write(b"\0\1\2")
  with pytest.raises(DataError, match="shard-00000.array_record: checksum differs"):
    records.PreparedSource(copy, "test").check_files(full=True)
  os.remove(os.path.join(copy, records.MANIFEST))
  with pytest.raises(DataError, match="half-written conversion"):
    prepared.open_sources(config)


def _prepare_cli(out, raw, *extra, env=None):
  cmd = [sys.executable, "-m", "mtljax.prepare", "--config=configs/treesat.py:tiny",
         f"--config.data.synthetic.dir={raw}", "--config.data.synthetic.num_train=48",
         "--config.data.synthetic.num_test=16", "--config.data.stats_examples=32",
         f"--out={out}", "--shard_size=16", "--workers=1", *extra]  # fmt: skip
  env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_killed_conversion_resumes_and_matches(converted, tmp_path):
  config, out, _ = converted
  resumed = str(tmp_path / "resumed")
  killed = _prepare_cli(
    resumed, config.data.synthetic.dir, env={"MTLJAX_KILL_AT": "prepare.shard.done@2"}
  )
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert not os.path.exists(os.path.join(resumed, records.MANIFEST))
  first = os.path.join(resumed, "train", "shard-00000.array_record")
  before = os.stat(first).st_mtime_ns
  done = _prepare_cli(resumed, config.data.synthetic.dir)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "train: 2 of 3 shards already written, kept" in done.stdout + done.stderr
  assert os.stat(first).st_mtime_ns == before  # kept, not rewritten
  a, b = (json.load(open(os.path.join(d, records.MANIFEST))) for d in (out, resumed))
  for split in a["splits"]:  # byte-identical to the uninterrupted conversion
    assert a["splits"][split]["checksum"] == b["splits"][split]["checksum"]
  assert a["statistics"] == b["statistics"]
  # Another config into the same folder: one error line, exit 2, nothing touched.
  other = _prepare_cli(resumed, config.data.synthetic.dir, "--config.data.aerial_size=16")
  assert other.returncode == 2
  lines = other.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and "source_kwargs.aerial_size" in lines[-1]


@pytest.mark.slow
def test_a_run_from_prepared_data_matches_the_raw_run_and_resumes(fault_reference, tmp_path):
  """A prepared dataset end to end: `python -m mtljax.main` on a prepared dataset (uint8 aerial
  standardised in the jitted steps), SIGKILLed mid-epoch and resumed, writes the raw archive's
  run's metrics, predictions and final results (profiling/experiments/fault_injection.py compares
  them)."""
  from profiling.experiments import fault_injection as fi

  ref, root = fault_reference
  config = treesat.get_config("tiny")
  config.data.root = root
  out = str(tmp_path / "prepared")
  convert.convert(config, out, shard_size=40, workers=1, progress=False, standardized=_std(config))
  extra = (f"--config.data.prepared={out}",)
  outcome, detail = fi.trial(ref, root, "train.step@9", str(tmp_path / "work"), extra=extra)
  assert outcome == "identical", detail
