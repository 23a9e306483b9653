"""Record checks and ALIGN-style filters: why a record is skipped, decided before decoding.

Every record that reaches the pipeline gets a reason code; 0 means it is kept. The checks
read only the record's bytes (image headers, caption text), so they cost microseconds and
never allocate a decoded image. One reason is decided later: `corrupt_image`, an image whose
header looks valid but whose body does not decode (counted by the pipeline, see pipeline.py);
a JPEG without an end-of-image marker after its scan (cut short) is `corrupt_image` at once.

Bounds on what a file may claim (config.data; the readers in sources.py apply the first three):
  max_record_bytes   a TFRecord length field above this (or past the file's end) is not read
  max_member_bytes   a tar member above this is not read (a .txt above max_text_bytes neither)
  max_json_depth     a .json caption nested deeper than this is not parsed
  max_image_aspect   an image whose longer side exceeds this many times its shorter side is
                     `extreme_aspect` (resizing its shorter side would allocate side^2 x ratio)

ALIGN's filters (docs/METHODS.md section 1; thresholds in config.data.filters, 0 = off):
  min_image_side     drop images whose shorter side is under this many pixels   (ALIGN: 200)
  max_aspect_ratio   drop images whose longer/shorter side ratio is above this   (ALIGN: 3)
  min_unigrams / max_unigrams   drop texts with fewer / more whitespace words    (ALIGN: 3 / 20)
  max_shared_text    drop alt-texts shared by more than this many images         (ALIGN: 10)
  min_unigram_count  drop texts containing a word seen fewer times than this in the corpus
The last two need corpus statistics (TextStats), written by `python -m vlalign.tools.convert`
(text_stats.json next to its output) and named in config.data.filters.stats_file.
"""

import dataclasses
import hashlib
import json
import re
import struct
from typing import Iterable

import tensorflow as tf

from vlalign.data.spec import DataError

# Reason codes: index in this tuple. Order is part of the checkpoint format (append only).
REASONS = ('ok', 'unreadable_shard', 'truncated_file', 'malformed_record', 'missing_image',
           'missing_text', 'empty_image', 'unsupported_format', 'zero_size_image',
           'absurd_dimensions', 'empty_text', 'non_utf8_text', 'text_too_long', 'corrupt_image',
           'small_image', 'aspect_ratio', 'few_unigrams', 'many_unigrams', 'shared_text',
           'rare_tokens', 'record_too_large', 'member_too_large', 'compressed_shard',
           'json_too_deep', 'extreme_aspect', 'duplicate_key', 'worker_crashed',
           'missing_file', 'path_escape')
CODE = {name: i for i, name in enumerate(REASONS)}
FILTER_REASONS = ('small_image', 'aspect_ratio', 'few_unigrams', 'many_unigrams', 'shared_text',
                  'rare_tokens')

# A decoded image above this many pixels is refused from its header (a 60-byte PNG can claim
# 2^31 x 2^31 pixels); the in-graph decoder checks the same bound (image_ops.MAX_PIXELS).
MAX_PIXELS = 1 << 26
# Steps of the JPEG marker walk before its first scan (a marker or a fill byte each); a header
# that needs more is treated as cut short (`corrupt_image`). Real files need a few dozen; the
# bound keeps the walk (and its TF twin, native_checks.py) short on crafted headers.
MAX_JPEG_STEPS = 1024


def image_format_and_size(data: bytes) -> tuple[str, int, int]:
  """(format, height, width) from an encoded image's header without decoding it; format is
  '' for bytes no supported decoder recognises; sizes are -1 when the header is cut short."""
  n = len(data)
  if data[:8] == b'\x89PNG\r\n\x1a\n':
    if n < 24:
      return 'png', -1, -1
    w, h = struct.unpack('>II', data[16:24])
    return 'png', h, w
  if data[:3] == b'\xff\xd8\xff':
    h, w, scan = _jpeg_info(data)
    if scan > 0 and not _has_end(data, scan):  # no end-of-image after the scan: cut short
      return 'jpeg', -1, -1
    return 'jpeg', h, w
  if data[:6] in (b'GIF87a', b'GIF89a'):
    if n < 10:
      return 'gif', -1, -1
    w, h = struct.unpack('<HH', data[6:10])
    return 'gif', h, w
  if data[:2] == b'BM':
    if n < 26:
      return 'bmp', -1, -1
    w, h = struct.unpack('<ii', data[18:26])
    return 'bmp', abs(h), w
  if data[:4] == b'RIFF' and data[8:12] == b'WEBP':
    return ('webp',) + _webp_size(data)
  return '', -1, -1


def _has_end(data: bytes, scan: int) -> bool:
  """Whether an end-of-image marker follows `scan`: looked for in the last KB first (where it
  is, bar trailing bytes), as a search through entropy-coded data full of FF 00 is slow."""
  return (data.rfind(b'\xff\xd9', max(scan, len(data) - 1024)) >= 0 or
          data.find(b'\xff\xd9', scan) >= 0)


def _jpeg_info(data: bytes) -> tuple[int, int, int]:
  """(height, width, offset of the first scan) from the JPEG markers; sizes are -1 when the
  header is cut short, the offset 0 when no scan follows. Inside a scan 0xFF is always stuffed,
  so a complete file has an end-of-image marker (FF D9) after the offset."""
  i, n, h, w = 2, len(data), -1, -1
  for _ in range(MAX_JPEG_STEPS):
    if i + 4 > n:
      break
    if data[i] != 0xFF:
      return -1, -1, 0
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
      i += 2
      continue
    (length,) = struct.unpack('>H', data[i + 2:i + 4])
    if marker == 0xDA:  # start of scan
      return h, w, i
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      if i + 9 > n:
        return -1, -1, 0
      h, w = struct.unpack('>HH', data[i + 5:i + 9])
    i += 2 + length
  return -1, -1, 0  # cut short before the first scan (or a header of over MAX_JPEG_STEPS)


def _webp_size(data: bytes) -> tuple[int, int]:
  chunk = data[12:16]
  if chunk == b'VP8X' and len(data) >= 30:
    w = int.from_bytes(data[24:27], 'little') + 1
    h = int.from_bytes(data[27:30], 'little') + 1
    return h, w
  if chunk == b'VP8L' and len(data) >= 25:
    bits = int.from_bytes(data[21:25], 'little')
    return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
  if chunk == b'VP8 ' and len(data) >= 30:
    w, h = struct.unpack('<HH', data[26:30])
    return h & 0x3FFF, w & 0x3FFF
  return -1, -1


_WORD = re.compile(r'\S+')


def unigrams(text: str) -> list[str]:
  """Lower-cased whitespace words (ALIGN's unigram counts)."""
  return _WORD.findall(text.lower())


def text_key(text: str) -> str:
  """Fingerprint of a caption for the shared-alt-text rule (case and spacing ignored)."""
  norm = ' '.join(unigrams(text)).encode()
  return hashlib.blake2b(norm, digest_size=8).hexdigest()


@dataclasses.dataclass
class TextStats:
  """Corpus counts the frequency filters need: how many records share each caption (only
  captions seen at least twice are kept) and how often each unigram occurs."""
  shared: dict[str, int]
  unigram_counts: dict[str, int]
  records: int

  @classmethod
  def build(cls, texts: Iterable[str]) -> 'TextStats':
    shared, words, n = {}, {}, 0
    for t in texts:
      n += 1
      k = text_key(t)
      shared[k] = shared.get(k, 0) + 1
      for w in unigrams(t):
        words[w] = words.get(w, 0) + 1
    return cls({k: c for k, c in shared.items() if c > 1}, words, n)

  def save(self, path: str) -> None:
    with tf.io.gfile.GFile(path, 'w') as f:
      json.dump({'records': self.records, 'shared': self.shared,
                 'unigram_counts': self.unigram_counts}, f)

  @classmethod
  def load(cls, path: str) -> 'TextStats':
    if not tf.io.gfile.exists(path):
      raise DataError(f'config.data.filters.stats_file: {path} does not exist (write it with '
                       f'python -m vlalign.tools.convert)')
    with tf.io.gfile.GFile(path) as f:
      try:
        d = json.load(f)
        return cls(dict(d['shared']), dict(d['unigram_counts']), int(d['records']))
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(f'config.data.filters.stats_file: {path} is not a text-stats file '
                         f'({type(e).__name__}: {e})') from e


@dataclasses.dataclass(frozen=True)
class Checks:
  """What check() and the readers enforce: the record checks, the bounds on what a file may
  claim (config.data.max_*), and the configured ALIGN filters."""
  max_text_bytes: int = 4096
  max_image_aspect: float = 20.0
  max_record_bytes: int = 64 << 20
  max_member_bytes: int = 32 << 20
  max_json_depth: int = 32
  min_image_side: int = 0
  max_aspect_ratio: float = 0.0
  min_unigrams: int = 0
  max_unigrams: int = 0
  max_shared_text: int = 0
  min_unigram_count: int = 0
  stats: TextStats | None = None

  @classmethod
  def from_config(cls, data_cfg) -> 'Checks':
    f = data_cfg.filters
    need_stats = f.max_shared_text > 0 or f.min_unigram_count > 0
    if need_stats and not f.stats_file:
      raise DataError('config.data.filters.stats_file: is empty, but max_shared_text / '
                       'min_unigram_count need corpus text statistics (written by python -m '
                       'vlalign.tools.convert as text_stats.json)')
    stats = TextStats.load(f.stats_file) if need_stats else None
    return cls(max_text_bytes=data_cfg.max_text_bytes,
               max_image_aspect=data_cfg.max_image_aspect,
               max_record_bytes=data_cfg.max_record_bytes,
               max_member_bytes=data_cfg.max_member_bytes,
               max_json_depth=data_cfg.max_json_depth, min_image_side=f.min_image_side,
               max_aspect_ratio=f.max_aspect_ratio, min_unigrams=f.min_unigrams,
               max_unigrams=f.max_unigrams, max_shared_text=f.max_shared_text,
               min_unigram_count=f.min_unigram_count, stats=stats)


def check(image: bytes | None, text: bytes | None, checks: Checks) -> int:
  """Reason code (REASONS) for one record's raw image bytes and caption bytes; None means the
  field is missing. 0: keep it."""
  if image is None:
    return CODE['missing_image']
  if text is None:
    return CODE['missing_text']
  if not image:
    return CODE['empty_image']
  fmt, h, w = image_format_and_size(image)
  if not fmt:
    return CODE['unsupported_format']
  if h == 0 or w == 0:
    return CODE['zero_size_image']
  if h < 0 or w < 0:  # a header cut short: the body cannot decode either
    return CODE['corrupt_image']
  if h * w > MAX_PIXELS:
    return CODE['absurd_dimensions']
  if max(h, w) > checks.max_image_aspect * min(h, w):  # resizing its short side would explode
    return CODE['extreme_aspect']
  if len(text) > checks.max_text_bytes:
    return CODE['text_too_long']
  try:
    caption = text.decode('utf-8')
  except UnicodeDecodeError:
    return CODE['non_utf8_text']
  if not caption.strip():
    return CODE['empty_text']
  if checks.min_image_side and min(h, w) < checks.min_image_side:
    return CODE['small_image']
  if checks.max_aspect_ratio and max(h, w) > checks.max_aspect_ratio * min(h, w):
    return CODE['aspect_ratio']
  if checks.min_unigrams or checks.max_unigrams or checks.min_unigram_count:
    words = unigrams(caption)
    if checks.min_unigrams and len(words) < checks.min_unigrams:
      return CODE['few_unigrams']
    if checks.max_unigrams and len(words) > checks.max_unigrams:
      return CODE['many_unigrams']
  if checks.max_shared_text and checks.stats.shared.get(text_key(caption), 1) > \
      checks.max_shared_text:
    return CODE['shared_text']
  if checks.min_unigram_count:
    counts = checks.stats.unigram_counts
    if any(counts.get(w, 0) < checks.min_unigram_count for w in words):
      return CODE['rare_tokens']
  return 0


def counts_dict(counts) -> dict[str, int]:
  """{reason: n} for the non-zero entries of a per-reason count vector (index 0 unused)."""
  return {REASONS[i]: int(c) for i, c in enumerate(counts) if i and c}
