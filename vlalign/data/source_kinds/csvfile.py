"""csv:<glob>: CSV / TSV files of image paths and captions, the layout OpenCLIP trains from.

The first line names the columns; config.data.csv says which hold the image path
(image_column, OpenCLIP's 'filepath') and the caption (caption_column, 'title') and the
separator ('\\t', OpenCLIP's default, or ','). One row is one line (quoted fields may hold the
separator, not a line break). A relative image path is relative to the CSV's folder, and every
image must lie under that folder (checked on the normalised path, so '..' and absolute paths
elsewhere are refused; symbolic links inside it are followed as the user set them up).

Every row is a record with a reason code, never an exception: a line over data.max_record_bytes
is `record_too_large` (skipped without being held in memory), a row with fewer fields than it
needs `malformed_record`, an image path leaving the folder `path_escape`, one that does not
exist (or is not a readable file) `missing_file`, an image over data.max_member_bytes
`member_too_large` (not read); the caption and image bytes then go through filters.check like
every other kind's. A file that cannot be opened, or whose header lacks the columns, is one
`unreadable_shard` record. Ids are '<csv file name>:<row>' (rows counted from 0 after the
header), so resume and example ids are stable. Local files only.
"""

import csv
import os
from typing import Iterator

import numpy as np

from vlalign.data import filters
from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base
from vlalign.data.spec import DataError

_CODE = filters.CODE


def _line(f, limit: int) -> tuple[bytes | None, str]:
  """(next line, '') or (b'', 'record_too_large') for a line over `limit` bytes (read past in
  bounded pieces); (None, '') at the end of the file."""
  line = f.readline(limit + 1)
  if not line:
    return None, ''
  if len(line) > limit and not line.endswith(b'\n'):
    while True:
      rest = f.readline(1 << 20)
      if not rest or rest.endswith(b'\n'):
        return b'', 'record_too_large'
  return line, ''


def _fields(line: bytes, sep: str) -> list[str] | None:
  """The fields of one line (None when the csv module cannot parse it)."""
  text = line.decode('utf-8', 'surrogateescape').rstrip('\r\n')
  if '"' not in text:
    return text.split(sep)
  try:
    return next(csv.reader([text], delimiter=sep), [])
  except csv.Error:  # a field over csv.field_size_limit
    return None


def image_path(root: str, value: str) -> tuple[str, str]:
  """(the image file a row names, '') or ('', reason): path_escape when it leaves `root`."""
  if not value:
    return '', 'missing_image'
  path = os.path.normpath(os.path.join(root, value))  # an absolute value replaces root
  if os.path.commonpath([root, path]) != root:
    return '', 'path_escape'
  return path, ''


def read_image(path: str, max_bytes: int) -> tuple[bytes, str]:
  """(the file's bytes, '') or (b'', reason) when it is missing, unreadable or too large."""
  try:
    if not os.path.isfile(path):
      return b'', 'missing_file'
    if os.path.getsize(path) > max_bytes:
      return b'', 'member_too_large'
    with open(path, 'rb') as f:
      return f.read(max_bytes + 1), ''
  except OSError:
    return b'', 'missing_file'


def rows(path: str, columns: tuple[str, ...], sep: str,
         checks: filters.Checks) -> Iterator[tuple[bytes, list[str] | None, int]]:
  """(id, the row's `columns` values or None, reason) per data row of one CSV file."""
  base_name = os.path.basename(path)
  try:
    f = open(path, 'rb')  # pylint: disable=consider-using-with
  except OSError:
    yield base_name.encode(), None, _CODE['unreadable_shard']
    return
  i = 0
  with f:
    try:
      header, bad = _line(f, checks.max_record_bytes)
      names = _fields(header, sep) if header and not bad else None
      if not names or any(c not in names for c in columns):
        yield base_name.encode(), None, _CODE['unreadable_shard']
        return
      index = [names.index(c) for c in columns]
      while True:
        line, bad = _line(f, checks.max_record_bytes)
        if line is None:
          return
        if not bad and not line.strip():
          continue  # blank lines are not rows (as pandas reads them)
        uid, i = f'{base_name}:{i}'.encode(), i + 1
        fields = None if bad else _fields(line, sep)
        if bad or fields is None or len(fields) <= max(index):
          yield uid, None, _CODE[bad or 'malformed_record']
          continue
        yield uid, [fields[j] for j in index], 0
    except OSError:  # a read error mid-file
      yield f'{base_name}:{i}'.encode(), None, _CODE['truncated_file']


def read_csv(path: str, csv_cfg, checks: filters.Checks) -> Iterator[tuple]:
  """(image, caption, id, reason) per row of one CSV file; never raises."""
  root = os.path.dirname(os.path.abspath(path))
  for uid, values, reason in rows(path, (csv_cfg.image_column, csv_cfg.caption_column),
                                  csv_cfg.separator, checks):
    if reason:
      yield b'', b'', uid, reason
      continue
    image, bad = _image(root, values[0], checks)
    if bad:
      yield b'', b'', uid, _CODE[bad]
      continue
    text = values[1].encode('utf-8', 'surrogateescape')
    yield image, text, uid, filters.check(image, text, checks)


def _image(root: str, value: str, checks: filters.Checks) -> tuple[bytes, str]:
  path, bad = image_path(root, value)
  return (b'', bad) if bad else read_image(path, checks.max_member_bytes)


class Csv(base.FileKind):
  """CSV / TSV files (a glob); a single file is split between hosts by row."""
  name = 'csv'

  def resolve(self, spec, arg, data_cfg, embedded):
    if '://' in arg:
      raise DataError(f'config.data.sources: {spec!r}: csv sources are local files')
    source = super().resolve(spec, arg, data_cfg, embedded)
    c = data_cfg.csv
    for path in source.files:  # fail fast on a header without the configured columns
      try:
        with open(path, 'rb') as f:
          header, _ = _line(f, data_cfg.max_record_bytes)
      except OSError as e:
        raise DataError(f'config.data.sources: {spec!r}: cannot read {path} ({e})') from None
      names = _fields(header or b'', c.separator) or []
      for field in ('image_column', 'caption_column'):
        if c[field] not in names:
          raise DataError(f'config.data.csv.{field}: {c[field]!r} is not a column of {path} '
                          f'(header {names[:20]}, separator {c.separator!r})')
    return source

  def read(self, path, data_cfg, checks):
    return read_csv(path, data_cfg.csv, checks)

  def labelled(self, source, entry, data_cfg):
    """The image and the integer label_key column of each usable row (others skipped)."""
    images, labels, n_max = [], [], entry['max_examples']
    checks = filters.Checks.from_config(data_cfg)
    columns = (data_cfg.csv.image_column, entry['label_key'])
    for path in source.files:
      root = os.path.dirname(os.path.abspath(path))
      for _, values, reason in rows(path, columns, data_cfg.csv.separator, checks):
        if reason or not values[1].strip().lstrip('-').isdigit():
          continue
        image, bad = _image(root, values[0], checks)
        if bad or filters.check(image, b'-', checks):
          continue
        images.append(image)
        labels.append(int(values[1]))
        if n_max and len(images) == n_max:
          break
    return images, np.asarray(labels, np.int64), None
