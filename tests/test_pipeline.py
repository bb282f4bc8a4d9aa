"""grain pipeline: statistics, normalisation, determinism, epochs, resume, eval padding, augmentation."""

from __future__ import annotations

import json
import pickle

import grain
import numpy as np
import pytest

from mtljax.data import pipeline as P
from mtljax.data.pipeline.transforms import Prepare, tree_map
from mtljax.data.treesat.reader import TreeSatAISource
from mtljax.data.treesat.synthetic import write_tiny_treesat

INPUTS = ("aerial", "s1", "s2", "age")
TASKS = ("l3", "l2", "l1", "age", "species", "l3_multi")
RO = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> TreeSatAISource:
  root = write_tiny_treesat(tmp_path_factory.mktemp("treesat") / "tiny")
  return TreeSatAISource(root, "train", aerial_size=32)  # 48 examples


@pytest.fixture(scope="module")
def stats(train):
  return P.compute_stats(train, INPUTS, progress=False)


def make_iter(source, stats, seed=0, batch_size=8, **kw):
  kw.setdefault("read_options", RO)
  return P.train_iterator(source, input_names=INPUTS, task_names=TASKS, stats=stats, batch_size=batch_size,
                            seed=seed, **kw)  # fmt: skip


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  for x, y in zip(a, b, strict=True):
    for part in ("inputs", "targets", "mask", "meta"):
      for k in x[part]:
        np.testing.assert_array_equal(x[part][k], y[part][k])


def stacked(source, name):
  return np.stack([source[i]["inputs"][name] for i in range(len(source))])


# ------------------------------------------------------------------------------------------ stats
def test_stats_match_numpy(train, stats):
  json.dumps(stats)  # serialisable
  for name in INPUTS:
    x = stacked(train, name).astype(np.float64)
    x = x.reshape(-1, x.shape[-1])
    np.testing.assert_allclose(stats[name]["mean"], np.nanmean(x, axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
      stats[name]["std"], np.maximum(np.nanstd(x, axis=0), 1e-6), rtol=1e-7
    )
  assert np.isfinite(stats["s1"]["mean"]).all()  # S1 nodata ignored


def test_stats_subsample_is_seeded(train):
  a = P.compute_stats(train, ["s2"], max_examples=10, seed=1, progress=False)
  b = P.compute_stats(train, ["s2"], max_examples=10, seed=1, progress=False)
  c = P.compute_stats(train, ["s2"], max_examples=10, seed=2, progress=False)
  assert a == b and a != c


def test_stats_constant_channel_floor():
  class Const:
    def __len__(self):
      return 3

    def __getitem__(self, i):
      return {"inputs": {"x": np.full((2, 2, 2), 5.0, np.float32)}}

  s = P.compute_stats(Const(), ["x"], progress=False)
  assert s["x"] == {"mean": [5.0, 5.0], "std": [1e-6, 1e-6]}


# ---------------------------------------------------------------------------------- normalisation
def test_normalize_standardises_and_fills_nan(train, stats):
  ex = train[0]
  out = P.normalize(ex, stats, input_names=["s1", "s2"])
  assert set(out["inputs"]) == {"s1", "s2"}
  s2 = (ex["inputs"]["s2"] - np.float32(stats["s2"]["mean"])) / np.float32(stats["s2"]["std"])
  np.testing.assert_allclose(out["inputs"]["s2"], s2, rtol=1e-6)
  assert np.isfinite(out["inputs"]["s1"]).all()
  nan = np.isnan(ex["inputs"]["s1"])
  assert np.all(out["inputs"]["s1"][nan] == 0.0)
  # Inputs without stats pass through as float32.
  raw = P.normalize(ex, {}, input_names=["s2"])
  assert raw["inputs"]["s2"].dtype == np.float32
  np.testing.assert_array_equal(raw["inputs"]["s2"], ex["inputs"]["s2"])


def test_eval_batches_are_standardised(train, stats):
  batches = list(P.eval_batches(train, input_names=INPUTS, task_names=TASKS, stats=stats, batch_size=16,
                                  read_options=RO))  # fmt: skip
  for name in ("aerial", "s2", "age"):
    x = np.concatenate([b["inputs"][name][b["valid"] > 0] for b in batches]).astype(np.float64)
    x = x.reshape(-1, x.shape[-1])
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-3)
  s1 = np.concatenate([b["inputs"]["s1"] for b in batches]).reshape(-1, 3)
  np.testing.assert_allclose(s1.mean(axis=0), 0.0, atol=0.05)  # NaN filled with the mean (0)
  assert np.all(s1.std(axis=0) < 1.0) and np.all(s1.std(axis=0) > 0.8)


def test_train_batches_roughly_standardised_and_finite(train, stats):
  it = make_iter(train, stats, augment_cfg=True)
  batches = take(it, 12)  # two epochs
  for b in batches:
    for part in ("inputs", "targets", "mask"):
      for k, v in b[part].items():
        assert np.isfinite(v).all(), (part, k)
    assert b["valid"].dtype == np.float32 and np.all(b["valid"] == 1.0)
  x = np.concatenate([b["inputs"]["aerial"] for b in batches]).reshape(-1, 4)
  np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=0.05)
  np.testing.assert_allclose(x.std(axis=0), 1.0, atol=0.05)


def test_batch_structure(train, stats):
  b = next(make_iter(train, stats))
  assert set(b) == {"inputs", "targets", "mask", "meta", "valid"}
  assert b["inputs"]["aerial"].shape == (8, 32, 32, 4) and b["inputs"]["aerial"].dtype == np.float32
  assert b["inputs"]["s1"].shape == (8, 6, 6, 3) and b["inputs"]["s2"].shape == (8, 6, 6, 12)
  assert b["inputs"]["age"].shape == (8, 1)
  assert b["targets"]["l3"].shape == (8,) and b["targets"]["l3"].dtype == np.int32
  assert b["targets"]["l3_multi"].shape == (8, 15) and b["targets"]["age"].dtype == np.float32
  assert set(b["mask"]) == set(TASKS) and all(
    m.shape == (8,) and m.dtype == np.float32 for m in b["mask"].values()
  )
  assert b["meta"]["index"].shape == (8,) and b["meta"]["index"].dtype == np.int32


def test_only_requested_fields(train, stats):
  it = P.train_iterator(train, input_names=["s2"], task_names=["l1"], stats=stats, batch_size=4, seed=0,
                          read_options=RO)  # fmt: skip
  b = next(it)
  assert set(b["inputs"]) == {"s2"} and set(b["targets"]) == {"l1"} and set(b["mask"]) == {"l1"}
  with pytest.raises(KeyError, match="nir"):
    P.train_iterator(
      train, input_names=["nir"], task_names=["l1"], stats=None, batch_size=4, seed=0
    )


# ---------------------------------------------------------------------------- order and resuming
def test_same_seed_same_batches_different_seed_different(train, stats):
  a = take(make_iter(train, stats, seed=3, augment_cfg=True), 4)
  b = take(
    make_iter(
      train, stats, seed=3, augment_cfg=True, read_options=grain.ReadOptions(num_threads=1)
    ),
    4,
  )
  c = take(make_iter(train, stats, seed=4, augment_cfg=True), 4)
  assert_batches_equal(a, b)  # independent of the thread count
  assert not np.array_equal(a[0]["meta"]["index"], c[0]["meta"]["index"])


def test_augmentation_changes_images_not_order(train, stats):
  a = take(make_iter(train, stats, seed=3, augment_cfg=True), 6)
  b = take(make_iter(train, stats, seed=3, augment_cfg=False), 6)
  assert_batches_equal(
    [{**x, "inputs": {}} for x in a], [{**x, "inputs": {}} for x in b]
  )  # order unaffected
  assert any(not np.array_equal(x["inputs"]["aerial"], y["inputs"]["aerial"]) for x, y in zip(a, b))


def test_each_epoch_is_a_new_permutation(train, stats):
  per_epoch = len(train) // 8  # 48 / 8: batches align with epochs
  idx = np.concatenate([b["meta"]["index"] for b in take(make_iter(train, stats), 3 * per_epoch)])
  epochs = idx.reshape(3, len(train))
  for e in epochs:
    assert sorted(e) == list(range(len(train)))
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_get_state_set_state_resumes_exactly(train, stats):
  it = make_iter(train, stats, seed=7, augment_cfg=True)
  take(it, 5)
  state = it.get_state()
  expected = take(it, 4)  # crosses an epoch boundary (6 batches per epoch)
  fresh = make_iter(train, stats, seed=7, augment_cfg=True)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 4), expected)


def test_orbax_checkpoint_of_iterator(train, stats, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  it = make_iter(train, stats, seed=1)
  take(it, 3)
  mngr = ocp.CheckpointManager(tmp_path / "ckpt", options=ocp.CheckpointManagerOptions(create=True))
  mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  expected = take(it, 3)
  fresh = make_iter(train, stats, seed=1)
  mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert_batches_equal(take(fresh, 3), expected)
  mngr.close()


def _concat_rows(batches):
  return tree_map(lambda *xs: np.concatenate(xs, axis=0), *batches)


def test_process_rows_assemble_the_single_process_global_batch(train, stats):
  """3 processes × 4 rows = the 12-example global batch of one process, batch for batch; each
  process reads disjoint rows (augmentation included: it is keyed by the global element)."""
  whole = take(make_iter(train, stats, batch_size=12, augment_cfg=True), 5)
  parts = [
    take(make_iter(train, stats, shard_index=p, shard_count=3, batch_size=4, augment_cfg=True), 5)
    for p in range(3)
  ]
  for k in range(5):
    idx = [parts[p][k]["meta"]["index"] for p in range(3)]
    assert len(set(np.concatenate(idx).tolist())) == 12  # disjoint rows
    assert_batches_equal([_concat_rows([parts[p][k] for p in range(3)])], [whole[k]])


def test_start_step_resumes_the_stream(train, stats):
  """The stream is a function of the step: starting at step 3 gives batches 3, 4, ... also
  when the process count differs from the run that wrote the checkpoint."""
  whole = take(make_iter(train, stats, batch_size=8, augment_cfg=True), 7)
  assert_batches_equal(
    take(make_iter(train, stats, batch_size=8, augment_cfg=True, start_step=3), 4), whole[3:]
  )
  halves = [
    take(
      make_iter(
        train, stats, shard_index=p, shard_count=2, batch_size=4, augment_cfg=True, start_step=5
      ),
      2,
    )
    for p in range(2)
  ]
  assert_batches_equal([_concat_rows([halves[0][k], halves[1][k]]) for k in range(2)], whole[5:7])


def test_eval_batches_split_across_processes(train, stats):
  kw = dict(input_names=["s2"], task_names=["l3"], stats=stats, batch_size=12, read_options=RO)
  whole = list(P.eval_batches(train, **kw))
  parts = [list(P.eval_batches(train, shard_index=p, shard_count=3, **kw)) for p in range(3)]
  assert all(len(x) == len(whole) for x in parts)
  for k in range(len(whole)):
    joined = _concat_rows([parts[p][k] for p in range(3)])
    np.testing.assert_array_equal(joined["meta"]["index"], whole[k]["meta"]["index"])
    np.testing.assert_array_equal(joined["valid"], whole[k]["valid"])
  valid_idx = np.concatenate([b["meta"]["index"][b["valid"] > 0] for part in parts for b in part])
  assert sorted(valid_idx.tolist()) == list(range(len(train)))


def test_num_batches_per_epoch(train):
  assert P.num_batches_per_epoch(train, 10) == 4
  assert P.num_batches_per_epoch(train, 10, drop_remainder=False) == 5


# ------------------------------------------------------------------------------------------ eval
def test_eval_batches_cover_every_example_once(train, stats):
  batches = list(P.eval_batches(train, input_names=["s2"], task_names=["l3"], stats=stats, batch_size=10,
                                  read_options=RO))  # fmt: skip
  assert len(batches) == P.num_batches_per_epoch(train, 10, drop_remainder=False) == 5
  for b in batches:
    assert b["inputs"]["s2"].shape == (10, 6, 6, 12) and b["valid"].shape == (10,)
    assert b["valid"].dtype == np.float32
  valid = np.concatenate([b["valid"] for b in batches])
  idx = np.concatenate([b["meta"]["index"] for b in batches])
  assert (
    valid.sum() == len(train)
    and np.all(valid[: len(train)] == 1)
    and np.all(valid[len(train) :] == 0)
  )
  np.testing.assert_array_equal(idx[valid > 0], np.arange(len(train)))  # in order, once each
  np.testing.assert_array_equal(idx[valid == 0], len(train) - 1)  # padding repeats the last example
  labels = train.label_arrays()["targets"]["l3"]
  np.testing.assert_array_equal(
    np.concatenate([b["targets"]["l3"] for b in batches])[valid > 0], labels
  )


# ------------------------------------------------------------------------------------ augmentation
class PatternSource:
  """In-memory source: a random 4x4 pattern at three resolutions plus a dense 4x4 target."""

  def __init__(self, n=16, seed=0):
    r = np.random.default_rng(seed)
    self.base = r.random((n, 4, 4, 2)).astype(np.float32)  # asymmetric: all 8 transforms differ

  def __len__(self):
    return len(self.base)

  def __getitem__(self, i):
    b = self.base[i]
    return {
      "inputs": {
        "small": b,
        "big": np.kron(b, np.ones((8, 8, 1), np.float32)),  # 32x32, same area
        "vec": np.arange(3, dtype=np.float32),
      },
      "targets": {"seg": (b[..., 0] > 0.5).astype(np.int32), "cls": np.int32(i % 2)},
      "mask": {"seg": np.ones((4, 4), np.float32), "cls": np.float32(1)},
      "meta": {"index": np.int32(i)},
    }


def _consistent(ex):
  small, big = ex["inputs"]["small"], ex["inputs"]["big"]
  np.testing.assert_array_equal(big, np.kron(small, np.ones((8, 8, 1), np.float32)))
  np.testing.assert_array_equal(ex["targets"]["seg"], (small[..., 0] > 0.5).astype(np.int32))


def test_augment_applies_one_transform_to_all_images():
  src = PatternSource()
  ex = src[0]
  seen = set()
  for seed in range(64):
    out = P.augment(ex, np.random.default_rng(seed))
    _consistent(out)
    np.testing.assert_array_equal(out["inputs"]["vec"], ex["inputs"]["vec"])
    seen.add(out["inputs"]["small"].tobytes())
    # The transform is a dihedral one: some rotation/flip of the original.
    cands = [np.rot90(ex["inputs"]["small"], k, axes=(0, 1)) for k in range(4)]
    cands += [c[:, ::-1] for c in cands]
    assert any(np.array_equal(out["inputs"]["small"], c) for c in cands)
  assert len(seen) == 8  # all eight transforms occur
  same = P.augment(ex, np.random.default_rng(0), flip=False, rot90=False)
  np.testing.assert_array_equal(same["inputs"]["small"], ex["inputs"]["small"])


def test_augment_in_train_iterator_keeps_modalities_aligned():
  src = PatternSource()
  it = P.train_iterator(src, input_names=["small", "big"], task_names=["seg", "cls"], stats=None, batch_size=4,
                          seed=0, augment_cfg={"flip": True, "rot90": True}, read_options=RO)  # fmt: skip
  changed = 0
  for b in take(it, 8):
    for j in range(4):
      ex = {part: {k: v[j] for k, v in b[part].items()} for part in ("inputs", "targets")}
      _consistent(ex)
      changed += not np.array_equal(ex["inputs"]["small"], src.base[b["meta"]["index"][j]])
  assert changed > 10


def test_augment_batch_on_device_matches_the_host_rules():
  import jax

  src = PatternSource()
  batch = {
    part: {k: np.stack([src[i][part][k] for i in range(len(src))]) for k in src[0][part]}
    for part in ("inputs", "targets", "mask")
  }
  batch["valid"] = np.ones(len(src), np.float32)
  seen = set()
  for seed in range(4):
    out = jax.tree.map(np.asarray, P.augment_batch(batch, jax.random.key(seed)))
    np.testing.assert_array_equal(out["inputs"]["vec"], batch["inputs"]["vec"])
    np.testing.assert_array_equal(out["targets"]["cls"], batch["targets"]["cls"])
    for j in range(len(src)):
      ex = {part: {k: v[j] for k, v in out[part].items()} for part in ("inputs", "targets")}
      _consistent(ex)  # the same transform for both resolutions and the dense target
      cands = [np.rot90(src.base[j], k, axes=(0, 1)) for k in range(4)]
      cands += [c[:, ::-1] for c in cands]
      hits = [t for t, c in enumerate(cands) if np.array_equal(ex["inputs"]["small"], c)]
      assert len(hits) == 1
      seen.add(hits[0])
  assert seen == set(range(8))  # every dihedral transform occurs
  # Flips only: the identity or the left-right flip of each example, never a rotation.
  flips = jax.tree.map(np.asarray, P.augment_batch(batch, jax.random.key(0), rot90=False))
  for j in range(len(src)):
    assert any(
      np.array_equal(flips["inputs"]["small"][j], c) for c in (src.base[j], src.base[j][:, ::-1])
    )
  # vmapped over keys (ensemble members): each member draws its own transforms.
  keys = jax.random.split(jax.random.key(1), 3)
  per_member = jax.vmap(lambda k: P.augment_batch(batch, k)["inputs"]["small"])(keys)
  assert not np.array_equal(per_member[0], per_member[1])


def test_pipeline_objects_pickle(train, stats):
  prep = Prepare(INPUTS, TASKS, stats)
  again = pickle.loads(pickle.dumps(prep))
  a, b = prep(train[0]), again(train[0])
  np.testing.assert_array_equal(a["inputs"]["s2"], b["inputs"]["s2"])


def test_fast_normalise_and_rotation_give_the_plain_numpy_bytes():
  """The row-wise standardisation (integer cast fused) and the whole-pixel rotation are the
  same bytes as the plain formulas, NaN/inf included; augmenting before normalising (what the
  training pipeline does) gives the same example as after."""
  from mtljax.data.pipeline import transforms as T

  rng = np.random.default_rng(0)
  for shape, dtype in [((9, 9, 4), np.uint8), ((9, 9, 4), np.float32), ((5, 5, 3, 2), np.float64),
                       ((6, 6), np.int16), ((3,), np.float32)]:  # fmt: skip
    x = (rng.normal(size=shape) * 60).astype(dtype)
    if dtype != np.uint8 and x.dtype.kind == "f":
      x.flat[0], x.flat[-1] = np.nan, np.inf
    c = shape[-1]
    st = {"x": {"mean": rng.normal(size=c).tolist(), "std": rng.uniform(0.5, 2, c).tolist()}}
    ref = (x.astype(np.float32) - np.float32(st["x"]["mean"])) / np.float32(st["x"]["std"])
    ref = np.where(np.isfinite(ref), ref, np.float32(0))
    got = T.normalize({"inputs": {"x": x}}, st)["inputs"]["x"]
    assert got.dtype == np.float32 and got.tobytes() == ref.tobytes()
    if x.ndim >= 2:
      for k in range(4):
        for flip in (False, True):
          want = np.rot90(x, k, axes=(0, 1))
          want = np.ascontiguousarray(want[:, ::-1] if flip else want)
          out = T._geometric(x, k, flip)
          assert out.shape == want.shape and out.tobytes() == want.tobytes()
  ex = {"inputs": {"a": rng.integers(0, 255, (8, 8, 4)).astype(np.uint8)},
        "targets": {"seg": rng.integers(0, 3, (8, 8)).astype(np.int32)}, "mask": {}}  # fmt: skip
  prep = T.Prepare(["a"], ["seg"], {"a": {"mean": [1, 2, 3, 4], "std": [2, 3, 4, 5]}})
  for seed in range(6):
    after = T.augment(prep(ex), np.random.default_rng(seed))
    before = T.AugmentThenFinish(prep, {"flip": True, "rot90": True})(
      prep.select(ex), np.random.default_rng(seed)
    )
    for part in ("inputs", "targets", "mask"):
      for k in after[part]:
        assert np.asarray(after[part][k]).tobytes() == np.asarray(before[part][k]).tobytes()
