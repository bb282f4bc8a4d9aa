"""Large rasters (mtljax/predict/tiles.py, `config.predict.raster`): tiling covers the scene, the
blended map equals each tile's own prediction where one tile covers a pixel and their weighted
mean inside the overlaps; end to end on a tiny façades model, a synthetic GeoTIFF scene comes
back as maps with its georeferencing, and a scene of the wrong band count is one `error:` line."""

import numpy as np
import pytest
from helpers.commands import run_main

from mtljax.predict import tiles

_FLAGS = (
  "--config.train.num_epochs=1",
  "--config.data.synthetic.num_images=96",
  "--config.data.synthetic.num_blocks=8",
  "--config.model.variant=BL",  # the baseline: no GRU to compile
)
_CONFIG = "configs/facades.py:tiny"


def test_tile_starts_cover_the_scene_with_the_last_tile_flush():
  assert tiles.tile_starts(40, 16, 8) == [0, 8, 16, 24]
  assert tiles.tile_starts(41, 16, 8) == [0, 8, 16, 24, 25]
  assert tiles.tile_starts(16, 16, 8) == [0]
  with pytest.raises(Exception, match="smaller than the model's input"):
    tiles.tile_starts(10, 16, 8)


def test_blending_keeps_each_tile_alone_and_averages_the_overlaps():
  rng = np.random.default_rng(0)
  scene = rng.normal(size=(37, 45, 2)).astype(np.float32)
  t, stride = 16, 10

  def fn(batch):  # a "model": a dense map and a per-tile value, each a function of the tile alone
    return {"dense": batch[..., 0] * 2 + batch[..., 1], "score": batch.mean(axis=(1, 2, 3))}

  maps, per_tile, corners = tiles.predict_tiled(scene, t, stride, fn, batch_size=3)
  assert maps["dense"].shape == (37, 45) and maps["score"].shape == (37, 45)
  alone = [fn(scene[None, y : y + t, x : x + t]) for y, x in corners]
  np.testing.assert_allclose(per_tile["score"], [a["score"][0] for a in alone], rtol=1e-6)
  # Reference: every pixel's covering tiles and their tent weights, by brute force.
  w = tiles.blend_weights(t)
  num, den = np.zeros((37, 45)), np.zeros((37, 45))
  count = np.zeros((37, 45), int)
  for (y, x), a in zip(corners, alone):
    num[y : y + t, x : x + t] += w * a["dense"][0]
    den[y : y + t, x : x + t] += w
    count[y : y + t, x : x + t] += 1
  assert count.min() >= 1 and count.max() > 1
  np.testing.assert_allclose(maps["dense"], num / den, rtol=1e-5, atol=1e-6)
  # Where one tile covers a pixel, the map is that tile's own prediction.
  one = count == 1
  first = np.full((37, 45), np.nan)
  for (y, x), a in zip(corners[::-1], alone[::-1]):
    first[y : y + t, x : x + t] = a["dense"][0]
  np.testing.assert_allclose(maps["dense"][one], first[one], rtol=1e-5, atol=1e-6)
  # Smooth seams: the tent weight is largest in a tile's centre.
  assert w[t // 2, t // 2] > w[0, t // 2] > 0


def _run(work, *flags):
  return run_main(work, *_FLAGS, *flags, config=_CONFIG)


def _scene(path, shape, geo=True):
  import tifffile

  from mtljax.data.treesat.synthetic import _geotags

  data = np.random.default_rng(1).uniform(0, 1, size=shape).astype(np.float32)
  tags = _geotags(500000.0, 5700000.0, 0.2, None) if geo else []
  tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", extratags=tags)


def test_a_scene_is_predicted_in_tiles_with_its_georeferencing(tmp_path):
  import tifffile

  work = tmp_path / "run"
  res = _run(work)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  _scene(tmp_path / "scene.tif", (40, 52, 3))
  res = _run(work, "--mode=predict", f"--config.predict.raster={tmp_path / 'scene.tif'}")
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  out = work / "predict" / "raster-scene" / "scene"
  with tifffile.TiffFile(out / "height_prob.tif") as f:
    prob = f.pages[0].asarray()
    assert f.pages[0].tags[33922].value[3:5] == (500000.0, 5700000.0)
    assert f.pages[0].tags[33550].value[:2] == (0.2, 0.2)
  assert prob.shape[:2] == (40, 52)
  np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-4)
  got = np.load(out / "tiles.npz")
  # The corner tile is covered by no other tile at its corner pixel: the map keeps its value.
  np.testing.assert_allclose(prob[0, 0], got["height/prob"][0], atol=1e-5)
  assert (out / "tiles.csv").read_text().startswith("y,x,")
  # A scene of another band count: one line naming the file and the bands.
  _scene(tmp_path / "bad.tif", (40, 40, 5), geo=False)
  res = _run(work, "--mode=predict", f"--config.predict.raster={tmp_path / 'bad.tif'}")
  assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr[-2000:]
  assert "bad.tif: 5 bands" in res.stderr and "has 3" in res.stderr
