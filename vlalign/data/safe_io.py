"""Reading untrusted files without trusting a length, size or depth they claim.

TFRecord framing (what TensorFlow's record reader does, minus its trust in the length field: a
76-byte file claiming a record of 2^60 bytes makes TensorFlow allocate it and die): each record
is  uint64 length | uint32 masked crc32c(length) | data | uint32 masked crc32c(data),  little
endian. Here a length is checked against its CRC, the bytes left in the file and
config.data.max_record_bytes before anything is read. Tar shards are read in stream mode with
member sizes checked from the header; their extension headers (pax, GNU long names), which the
tarfile module reads whole, are bounded by MAX_TAR_HEADER_BYTES. JSON nesting is measured
before parsing.
"""

import json
import re
import struct
import tarfile
from typing import Iterator

import google_crc32c
import numpy as np

# pax / GNU long-name headers hold a few names and numbers; refuse anything larger.
MAX_TAR_HEADER_BYTES = 1 << 20
# Leading bytes of the compressed containers a .tar may hide in (gzip, bzip2, xz, zstd).
COMPRESSED_MAGIC = (b'\x1f\x8b', b'BZh', b'\xfd7zXZ\x00', b'\x28\xb5\x2f\xfd')


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC-32C of `data`."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frames(f, size: int, max_record_bytes: int) -> Iterator[tuple[bytes | None, str]]:
  """(record, '') for each record of an open TFRecord file of `size` bytes, or (None, reason)
  for one that is not read: 'record_too_large' (skipped, reading goes on), 'malformed_record'
  (data CRC mismatch, reading goes on) or 'truncated_file' (cut short or a corrupt length
  field: the last item)."""
  pos = 0
  while pos < size:
    head = f.read(12)
    if len(head) < 12:
      yield None, 'truncated_file'
      return
    length, crc = struct.unpack('<QI', head)
    pos += 12
    if masked_crc(head[:8]) != crc or length + 4 > size - pos:
      yield None, 'truncated_file'  # the length cannot be trusted, or runs past the end
      return
    if length > max_record_bytes:
      f.seek(pos + length + 4)
      pos += length + 4
      yield None, 'record_too_large'
      continue
    body = f.read(length + 4)
    pos += length + 4
    if len(body) < length + 4:
      yield None, 'truncated_file'
      return
    data = body[:length]
    ok = struct.unpack('<I', body[length:])[0] == masked_crc(data)
    yield (data, '') if ok else (None, 'malformed_record')


def tfrecord_clean(f, size: int, max_record_bytes: int) -> bool:
  """Whether every record of an open TFRecord file of `size` bytes reads without a reason (each
  length and data CRC checked, no record over max_record_bytes, nothing cut short): then
  TensorFlow's own reader can read it without erring or allocating what a length claims."""
  return all(not bad for _, bad in tfrecord_frames(f, size, max_record_bytes))


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b'[]{}')))
_STEP = np.zeros(256, np.int8)
_STEP[list(b'[{')], _STEP[list(b']}')] = 1, -1


def json_depth(data: bytes) -> int:
  """Deepest nesting of arrays / objects in JSON text (strings ignored), without parsing."""
  brackets = _JSON_STRING.sub(b'""', data).translate(None, _NOT_BRACKETS)
  steps = _STEP[np.frombuffer(brackets, np.uint8)].astype(np.int32)
  return int(np.cumsum(steps).max(initial=0))


def json_caption(data: bytes, max_depth: int) -> tuple[str | None, str]:
  """(the 'caption' string of a JSON object or None, '' or 'json_too_deep')."""
  if json_depth(data) > max_depth:
    return None, 'json_too_deep'
  try:
    obj = json.loads(data)
  except (ValueError, RecursionError):
    return None, ''
  caption = obj.get('caption') if isinstance(obj, dict) else None
  return (caption if isinstance(caption, str) else None), ''


class HeaderTooLarge(tarfile.ReadError):
  """A tar extension header larger than MAX_TAR_HEADER_BYTES."""


class BoundedTarInfo(tarfile.TarInfo):
  """TarInfo that refuses pax / GNU long-name headers above MAX_TAR_HEADER_BYTES before the
  tarfile module reads them whole."""

  def _proc_member(self, tarfile_obj):
    extension = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                 tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
    if self.type in extension and self.size > MAX_TAR_HEADER_BYTES:
      raise HeaderTooLarge(f'{self.size}-byte extension header')
    return super()._proc_member(tarfile_obj)


def is_compressed(head: bytes) -> bool:
  """Whether a file's first bytes are a gzip / bzip2 / xz / zstd header."""
  return any(head.startswith(m) for m in COMPRESSED_MAGIC)
