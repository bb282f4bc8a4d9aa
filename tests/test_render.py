"""Explanation figures: overlay colours, PNG sizes, labelled-arrow geometry, TensorBoard images."""

import glob
import io
import os
import struct
import subprocess
import sys

import matplotlib
import matplotlib.image as mpimg
import numpy as np
import pytest
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2

from mtljax.explain import render


def _grey(h, w, value=0.5):
  return np.full((h, w, 3), value, dtype=np.float32)


def _blobs(e, h, w, seed=0):
  """`[E, H, W]` Gaussian blobs around a common centre, max-normalised to [0, 1]."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  cy, cx = h / 3 + rng.normal(0, 2, e), w / 2 + rng.normal(0, 2, e)
  m = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 50.0)
  return (m / m.max(axis=(1, 2), keepdims=True)).astype(np.float32)


def _read_png_shape(path):
  return mpimg.imread(path).shape[:2]


# ----------------------------------------------------------------------------- overlay


def test_overlay_colours():
  img = _grey(8, 10)
  hm = np.zeros((8, 10), np.float32)
  hm[3, 4] = 1.0
  out = render.overlay(img, hm, alpha=0.1)
  assert out.shape == (8, 10, 3) and out.dtype == np.uint8
  top = np.asarray(matplotlib.colormaps["jet"](1.0)[:3]) * 255
  before, after = img[3, 4] * 255, out[3, 4].astype(float)
  assert np.linalg.norm(after - top) < np.linalg.norm(before - top) - 10
  # A zero pixel keeps (almost) the image colour at small alpha.
  assert np.abs(out[0, 0].astype(float) - 127.5).max() <= 0.1 * 255 + 1
  np.testing.assert_array_equal(render.overlay(img, hm, alpha=0.0), np.full((8, 10, 3), 128))
  # uint8 images give the same result as their float equivalent.
  as_uint8 = render.overlay(np.full((8, 10, 3), 128, np.uint8), hm, alpha=0.1)
  assert np.abs(as_uint8.astype(int) - out).max() <= 1


def test_overlay_signed_and_nan():
  img = _grey(6, 6)
  hm = np.zeros((6, 6), np.float32)
  hm[1, 1], hm[2, 2], hm[3, 3] = -1.0, 1.0, np.nan
  out = render.overlay(img, hm, alpha=0.6).astype(int)  # auto: signed → bwr
  assert out[1, 1, 2] > out[1, 1, 0] + 100  # negative → blue
  assert out[2, 2, 0] > out[2, 2, 2] + 100  # positive → red
  np.testing.assert_array_equal(out[3, 3], out[0, 0])  # NaN counts as 0 (white in bwr)
  assert np.ptp(out[0, 0]) <= 1  # 0 is bwr's white: the grey stays grey
  with pytest.raises(ValueError):
    render.overlay(img, np.zeros((5, 6)))


# ----------------------------------------------------------------------------- panels and grids


def test_member_panels_png(tmp_path):
  path = tmp_path / "deep" / "er" / "panels.png"  # parents are created
  maps = _blobs(3, 24, 32)
  out = render.save_member_panels(
    path,
    _grey(24, 32),
    maps,
    maps.mean(0),
    title="wing pattern",
    member_scores=[0.1, 0.2, 0.3],
    ensemble_score=0.5,
    score_name="IoU",
  )
  assert out == str(path)
  # 5 panels in one row: 5 * 2.5 in wide; (2.5 + 0.45) + 0.5 (title) in high, at 100 dpi.
  assert _read_png_shape(path) == (345, 1250)
  assert os.listdir(path.parent) == ["panels.png"]  # no temporary file left behind
  render.save_member_panels(path, _grey(24, 32), -maps, maps.mean(0), ncols=2, dpi=40)
  arr = render.png_to_array(path)  # 3 rows of 2, no title
  assert arr.dtype == np.uint8 and arr.shape == (3 * 118, 2 * 100, 3)


def test_heatmap_grid_png(tmp_path):
  path = tmp_path / "grid.png"
  maps = _blobs(5, 16, 16)
  imgs = (np.random.default_rng(0).random((5, 16, 16, 3)) * 255).astype(np.uint8)
  render.save_heatmap_grid(path, imgs, maps, titles=list("abcde"), ncols=4)
  assert _read_png_shape(path) == (2 * 295, 4 * 250)


def test_size_curve_png(tmp_path):
  path = tmp_path / "size.png"
  sizes = [1, 2, 4, 8, 11]
  render.save_size_curve(
    path,
    sizes,
    [0.30, 0.34, 0.37, 0.39, 0.40],
    [0.3] * 5,
    ens_std=[0.02] * 5,
    ind_std=[0.03] * 5,
    title="ISIC-2018",
  )
  assert _read_png_shape(path) == (350, 500)
  with pytest.raises(ValueError):
    render.save_size_curve(path, sizes, [0.3] * 4, [0.3] * 5)


def test_failed_write_keeps_old_png(tmp_path, monkeypatch):
  path = tmp_path / "size.png"
  render.save_size_curve(path, [1, 2], [0.1, 0.2], [0.1, 0.1])
  before = path.read_bytes()

  def crash(*args, **kwargs):
    raise OSError("simulated crash")

  monkeypatch.setattr(render.os, "replace", crash)
  with pytest.raises(OSError, match="simulated"):
    render.save_size_curve(path, [1, 2], [0.5, 0.6], [0.1, 0.1], title="new")
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["size.png"]


# ----------------------------------------------------------------------------- labelled arrows


def _is_red(px):
  r, g, b = (int(v) for v in px[:3])
  return r > 180 and g < 90 and b < 90


def test_labelled_arrows_geometry_and_pixels(tmp_path):
  h, w, scale, (my, mx) = 48, 64, 4, (10, 40)
  heads = [
    ("long bill", (8.0, 58.0)),
    ("wingbars", (24.0, 30.0)),
    ("eye", (10.0, 52.0)),
    ("missing", (np.nan, 3.0)),
    ("solid wing", (40.0, 6.0)),
  ]
  members = {"wingbars": np.array([[22.0, 28.0], [27.0, 35.0], [np.nan, np.nan]])}
  path = tmp_path / "arrows.png"
  drawn = render.save_labelled_arrows(
    path,
    _grey(h, w),
    heads,
    member_points=members,
    title="western grebe",
    scale=scale,
    margin=(my, mx),
    dpi=100,
  )
  # NaN head skipped; the heads are the given points, in input order.
  assert [d[0] for d in drawn] == ["long bill", "wingbars", "eye", "solid wing"]
  for (label, head, _), (label_in, point) in zip(drawn, [x for x in heads if x[0] != "missing"]):
    assert label == label_in and head == pytest.approx(point)
  png = render.png_to_array(path)
  assert png.shape == ((h + 2 * my) * scale, (w + 2 * mx) * scale, 3)

  tails = np.array([t for _, _, t in drawn])
  # Tails inside the canvas, outside the image's columns (labels never cover the heads) ...
  assert np.all(tails[:, 0] > -0.5 - my) and np.all(tails[:, 0] < h - 0.5 + my)
  assert np.all(tails[:, 1] > -0.5 - mx) and np.all(tails[:, 1] < w - 0.5 + mx)
  assert np.all((tails[:, 1] < -0.5) | (tails[:, 1] > w - 0.5))
  # ... on the side of their head, and at least a text line apart within a column.
  assert tails[3, 1] < 0 < tails[0, 1]
  for i in range(len(tails)):
    for j in range(i):
      if tails[i, 1] == tails[j, 1]:
        assert abs(tails[i, 0] - tails[j, 0]) > 14 / scale  # 11 pt at 100 dpi ≈ 14 px tall

  def to_png(y, x):
    return int((y + 0.5 + my) * scale), int((x + 0.5 + mx) * scale)

  def window(y, x, r=3):
    row, col = to_png(y, x)
    return png[row - r : row + r + 1, col - r : col + r + 1].reshape(-1, 3)

  for _, (y, x), _ in drawn:  # red arrowheads at the heads
    assert any(_is_red(px) for px in window(y, x)), (y, x)
  for y, x in members["wingbars"][:2]:  # black member arrowheads
    assert any(px.max() < 60 for px in window(y, x))
  assert not any(_is_red(px) for px in window(h - 3, w / 2, r=2))  # untouched image: grey
  assert np.abs(png[to_png(h - 3, w / 2)].astype(int) - 128).max() <= 1


def test_labelled_arrows_auto_layout_crowded(tmp_path):
  # Six labels at the same point, default scale and margin: distinct tails, nothing lost.
  arrows = [(f"attribute {i}", (20.0, 25.0)) for i in range(6)]
  drawn = render.save_labelled_arrows(
    tmp_path / "a.png", _grey(32, 32), dict(arrows), member_points={"elsewhere": [[5.0, 5.0]]}
  )
  assert len(drawn) == 6
  tails = np.array([t for _, _, t in drawn])
  assert len({tuple(np.round(t, 6)) for t in tails}) == 6
  assert np.all(tails[:, 1] > 31.5)  # all on the right of the image
  rows, cols = _read_png_shape(tmp_path / "a.png")
  assert rows >= 512 and cols > 512  # long side of the image at 512 px plus margins
  assert render.save_labelled_arrows(tmp_path / "b.png", _grey(8, 8), []) == []


# ----------------------------------------------------------------------------- TensorBoard


def _read_events(path):
  """Events of a TFRecord file (length, crc, data, crc), CRCs not checked."""
  events, data = [], open(path, "rb").read()
  pos = 0
  while pos < len(data):
    (n,) = struct.unpack("<Q", data[pos : pos + 8])
    event = event_pb2.Event()
    event.ParseFromString(data[pos + 12 : pos + 12 + n])
    events.append(event)
    pos += 12 + n + 4
  return events


def test_tensorboard_images(tmp_path):
  render.save_size_curve(tmp_path / "size.png", [1, 2], [0.1, 0.2], [0.1, 0.1])
  fig = render.png_to_array(tmp_path / "size.png")
  assert fig.dtype == np.uint8 and fig.shape == (350, 500, 3)
  writer = SummaryWriter(str(tmp_path / "tb"))
  render.tensorboard_images(writer, "explain/size_curve", fig[None], step=7)
  writer.close()
  (events_file,) = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
  assert os.path.getsize(events_file) > 0
  images = [
    (e.step, v) for e in _read_events(events_file) for v in e.summary.value if v.HasField("image")
  ]
  assert [(s, v.tag) for s, v in images] == [(7, "explain/size_curve")]
  decoded = mpimg.imread(io.BytesIO(images[0][1].image.encoded_image_string), format="png")
  assert decoded.shape[:2] == (350, 500)
  np.testing.assert_array_equal(
    render.png_to_array(io.BytesIO(images[0][1].image.encoded_image_string)), fig
  )


def test_no_pyplot_import(tmp_path):
  code = (
    "import sys, numpy as np; from mtljax.explain import render; "
    "render.save_heatmap_grid(sys.argv[1], np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4))); "
    "assert 'matplotlib.pyplot' not in sys.modules"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run(
    [sys.executable, "-c", code, str(tmp_path / "g.png")], cwd=root, check=True, timeout=60
  )
  assert (tmp_path / "g.png").stat().st_size > 0
