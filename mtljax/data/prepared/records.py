"""One example as one ArrayRecord record, and the prepared split read back as a source.

Record layout (``FORMAT``): 4 bytes little-endian header length ``h``, ``h`` bytes of JSON
``[[path, stored dtype, dtype, shape], ...]``, then each array's raw bytes (C order) in the
header's order. ``path`` is the array's list of keys in the example (``["inputs", "aerial"]``,
``["inputs", "s2", "values"]``, ``["annotations", "masks", <name>]``). A float array whose values are all integers
that fit ``uint8`` / ``uint16`` / ``int16`` is stored in that type (``stored dtype``) and cast back
on reading: the cast is exact, so a prepared example is bit-identical to the reader's, at a
quarter of the size for 8-bit imagery (TreeSatAI's aerial CIR tiles).

Shards are written uncompressed (``WRITER_OPTIONS``): one record = one ``pread`` and a
``np.frombuffer`` per array. ArrayRecord's default (zstd) saves ~10 % on 8-bit imagery but costs
5x the read time of a 370 KB record (0.65 against 0.13 ms on this CPU), and the read is what
the prepared form is for. Shards written with another compression still read (the file says
which).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any

import numpy as np

from mtljax.data.source import DataError, example_index

FORMAT = "mtljax-prepared/1"
MANIFEST = "prepared.json"  # written last: its presence means the conversion is complete
PROGRESS = "conversion.json"  # written first: the identity of the conversion in progress
#: ArrayRecord writer options of the shards: one record per chunk (random access), no compression.
WRITER_OPTIONS = "group_size:1,uncompressed"

_NARROW = ((np.uint8, 0, 255), (np.uint16, 0, 65535), (np.int16, -32768, 32767))


def _flatten(tree: dict, prefix: tuple = ()) -> list[tuple[tuple, np.ndarray]]:
  out = []
  for k, v in tree.items():
    if v is None:
      continue
    if isinstance(v, dict):
      out += _flatten(v, (*prefix, k))
    else:
      out.append(((*prefix, k), np.asarray(v)))
  return out


def _narrow(a: np.ndarray) -> np.ndarray:
  """`a` in the smallest integer type holding its (integer) values exactly, else `a`."""
  if a.dtype.kind != "f" or a.size == 0 or not np.isfinite(a).all():
    return a
  lo, hi = a.min(), a.max()
  if not (a == np.floor(a)).all():
    return a
  for dtype, tlo, thi in _NARROW:
    if tlo <= lo and hi <= thi:
      return a.astype(dtype)
  return a


def encode(example: dict) -> bytes:
  """The record of one example (any nesting of dicts of numpy arrays; None leaves dropped)."""
  items = _flatten(example)
  stored = [(k, a, _narrow(a)) for k, a in items]
  header = json.dumps([[list(k), s.dtype.str, a.dtype.str, list(a.shape)] for k, a, s in stored])
  head = header.encode()
  parts = [struct.pack("<I", len(head)), head]
  parts += [np.ascontiguousarray(s).tobytes() for _, _, s in stored]
  return b"".join(parts)


_LAYOUTS: dict[
  bytes, list
] = {}  # record header -> [(path, stored dtype, dtype, shape, offset, count)]


def _layout(record: bytes) -> tuple[list, int]:
  """The parsed header of ``record`` (cached by its bytes: every record of a split shares it)."""
  (h,) = struct.unpack_from("<I", record, 0)
  key = bytes(record[4 : 4 + h])
  layout = _LAYOUTS.get(key)
  if layout is None:
    layout, pos = [], 4 + h
    for path, stored, dtype, shape in json.loads(key):
      sd, shape = np.dtype(stored), tuple(int(d) for d in shape)
      count = int(np.prod(shape, dtype=np.int64))
      layout.append((tuple(path), sd, np.dtype(dtype), shape, pos, count))
      pos += count * sd.itemsize
    if len(_LAYOUTS) < 1024:
      _LAYOUTS[key] = layout
  return layout, h


def decode(record: bytes, stored_inputs: bool = False) -> dict:
  """The example of ``encode``'s record (arrays are writable copies).

  With ``stored_inputs``, array inputs (``["inputs", name]``) stored in a narrower integer type
  come back in it, as read-only views of ``record`` (exact values, no cast, no copy)."""
  out: dict = {}
  for key, sd, dtype, shape, pos, count in _layout(record)[0]:
    a = np.frombuffer(record, sd, count, pos).reshape(shape)
    if stored_inputs and len(key) == 2 and key[0] == "inputs" and sd.kind in "ui":
      pass
    else:
      a = a.astype(dtype) if sd != dtype else a.copy()
    node = out
    *path, leaf = key
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = a
  return out


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def split_checksum(shards: list[dict]) -> str:
  """The checksum of a split: sha256 over its shards' sha256 in order."""
  return hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()


def read_manifest(directory: str) -> dict:
  """``<directory>/prepared.json``, or a DataError saying why the folder is not prepared data."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.isdir(directory):
    raise DataError(f"config.data.prepared={directory!r}: no such directory")
  if not os.path.exists(path):
    if os.path.exists(os.path.join(directory, PROGRESS)):
      raise DataError(
        f"{directory} is a half-written conversion (no {MANIFEST}): rerun the same "
        "`python -m mtljax.prepare` command to finish it"
      )
    raise DataError(f"{directory} is not a prepared dataset (no {MANIFEST})")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except ValueError as e:
    raise DataError(f"{path}: not valid JSON ({e})") from None
  if manifest.get("format") != FORMAT:
    raise DataError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


class PreparedSource:
  """One split of a prepared dataset: the ``Source`` contract over ArrayRecord shards.

  Capabilities of the raw reader that do not need its files are kept: ``groups``,
  ``day_reference``, ``prediction_meta``, ``metric_strata``, ``planted_truth``,
  ``annotation_owners`` (saved at conversion), ``read_target`` and ``explain_annotations`` (from
  the records), and ``check_files`` (shard sizes, or their checksums with ``full``).
  """

  def __init__(self, directory: str, split: str, manifest: dict | None = None):
    self.directory, self.split = os.fspath(directory), split
    self.manifest = manifest or read_manifest(self.directory)
    info = self.manifest["splits"].get(split)
    if info is None:
      raise DataError(
        f"{self.directory}/{MANIFEST}: no split {split!r} (has {sorted(self.manifest['splits'])})"
      )
    self.info = info
    self._paths = [os.path.join(self.directory, split, s["file"]) for s in info["shards"]]
    for p in self._paths:
      if not os.path.exists(p):
        raise DataError(f"{p}: shard of split {split!r} missing (rerun mtljax.prepare)")
    index_path = os.path.join(self.directory, split, "index.npz")
    if not os.path.exists(index_path):
      raise DataError(f"{index_path}: index of split {split!r} missing (rerun mtljax.prepare)")
    with np.load(index_path, allow_pickle=False) as z:
      self._index = {k: z[k] for k in z.files}
    self.names = [str(n) for n in self._index["names"]]
    if len(self.names) != info["count"]:
      raise DataError(f"{index_path}: {len(self.names)} names, expected {info['count']}")
    if "groups" in self._index:
      self.groups = self._index["groups"]
    extras = info.get("extras", {})
    if "day_reference" in extras:
      self.day_reference = extras["day_reference"]
    self._reader = None

  # ---------------------------------------------------------------- the contract
  def _data(self):
    if self._reader is None:  # opened lazily: the source pickles to grain's worker processes
      from array_record.python.array_record_data_source import ArrayRecordDataSource

      self._reader = ArrayRecordDataSource(self._paths)
    return self._reader

  def __getstate__(self):
    return {**self.__dict__, "_reader": None}

  def __len__(self) -> int:
    return len(self.names)

  def record(self, index: int) -> dict:
    return decode(self._data()[example_index(index, len(self.names))])

  def __getitem__(self, index: int) -> dict:
    example = self.record(index)
    example.pop("annotations", None)
    return example

  def stored_inputs(self) -> "StoredInputs":
    """Capability ``stored_inputs``: this split with 8/16-bit imagery in its stored type."""
    return StoredInputs(self)

  @property
  def input_fields(self) -> dict[str, dict[str, Any]]:
    return _fields(self.manifest["input_fields"])

  @property
  def target_fields(self) -> dict[str, dict[str, Any]]:
    return _fields(self.manifest["target_fields"])

  def label_arrays(self) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"targets": {}, "mask": {}}
    for k, v in self._index.items():
      part, _, task = k.partition("/")
      if part in out and task:
        out[part][task] = v
    return out

  # ---------------------------------------------------------------- capabilities
  def _extra(self, name):
    return self.info.get("extras", {}).get(name)

  def __getattr__(self, name):
    # Methods of the raw reader that return what was saved at conversion (only when it had them).
    saved = ("prediction_meta", "metric_strata", "planted_truth", "annotation_owners")
    if name in saved and name in self.__dict__.get("info", {}).get("extras", {}):
      if name in ("planted_truth", "annotation_owners"):
        return lambda: self._extra(name)
      prefix = f"{name}/"
      return lambda: {k[len(prefix) :]: v for k, v in self._index.items() if k.startswith(prefix)}
    if name == "explain_annotations" and self.__dict__.get("info", {}).get("annotations"):
      return self._annotations
    raise AttributeError(name)

  def _annotations(self, index: int) -> dict:
    ann = self.record(index).get("annotations", {})
    return {"masks": ann.get("masks", {}), "keypoints": ann.get("keypoints", {})}

  def read_target(self, task: str, i: int):
    example = self.record(i)
    return example["targets"][task], example["mask"][task]

  def check_files(self, *, progress: bool = True, full: bool = False) -> int:
    """Each shard's size (or, ``full``, its sha256) against the manifest; the example count."""
    for path, shard in zip(self._paths, self.info["shards"]):
      if os.path.getsize(path) != shard["bytes"]:
        raise DataError(
          f"{path}: {os.path.getsize(path)} bytes, the manifest says {shard['bytes']}"
        )
      if full and file_sha256(path) != shard["sha256"]:
        raise DataError(f"{path}: checksum differs from the manifest's (a damaged shard)")
    if len(self._data()) != len(self.names):
      raise DataError(f"{self.directory}/{self.split}: {len(self._data())} records, expected "
                      f"{len(self.names)}")  # fmt: skip
    return len(self.names)


def _fields(fields: dict) -> dict:
  """JSON fields back to the reader's form (shapes and channel lists as tuples)."""
  out = {}
  for name, f in fields.items():
    out[name] = {k: tuple(v) if isinstance(v, list) else v for k, v in f.items()}
  return out


class StoredInputs:
  """A prepared split whose array inputs keep their stored integer type (``uint8`` for 8-bit
  imagery): what the training and evaluation pipelines read (``capability(source,
  "stored_inputs")``). Their normalisation casts to float32 inside the standardisation, so the
  batches are the same bytes while the float32 copy of every image (and its rotation in float32)
  is never made."""

  def __init__(self, source: PreparedSource):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    record = self.source._data()[example_index(index, len(self.source))]
    example = decode(record, stored_inputs=True)
    example.pop("annotations", None)
    return example
