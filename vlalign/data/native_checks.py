"""filters.check as TensorFlow ops: the reason code of each record of a batch, in the graph.

What lets a TFRecord shard be parsed and checked by tf.data's threads (no Python callback, no
GIL; a pure graph the tf.data service can ship to remote workers). filters.check is the oracle:
for every record these ops give the same reason code, decided in the same order (tested on the
planted-bad-record and fuzzed records, tests/data/test_native_checks.py). Per batch:

  parse_batch     tf.io.parse_example of the image / text / id features (first bytes value; a
                  feature that is absent or has no value is missing, as in sources.example)
  header_sizes    format + (height, width) from each image's header: the magic bytes and the
                  size fields of PNG / GIF / BMP / WEBP read from a zero-padded byte matrix,
                  JPEG's marker walk (filters._jpeg_info) as a tf.while_loop over the batch,
                  at most filters.MAX_JPEG_STEPS steps, then the end-of-image search after the
                  first scan (tf.strings.split on FF D9)
  reasons         the checks of filters.check in its order: missing / empty fields, format,
                  zero / cut-short / absurd / extreme sizes, text length, strict UTF-8 (a
                  replacing transcode that must leave the bytes unchanged), blank text (Python's
                  str.isspace set as a regex class), and the ALIGN filters whose thresholds are
                  in config (min side, aspect ratio, unigram counts)

The corpus-statistics filters (max_shared_text, min_unigram_count: a stats_file) are not here:
supports() is False for such Checks and those shards are read by the Python reader.
"""

import functools
import sys

import tensorflow as tf

from vlalign.data import filters

C = filters.CODE
_PNG, _JPEG, _GIF, _BMP, _WEBP = 1, 2, 3, 4, 5
_HEAD = 32  # header bytes read per image (the furthest size field ends at byte 30)


def supports(checks: filters.Checks) -> bool:
  """Whether reasons() decides these checks (not the filters that need corpus statistics)."""
  return not (checks.max_shared_text or checks.min_unigram_count)


def parse_batch(records: tf.Tensor, keys: tuple[str, str, str]) -> tuple[tf.Tensor, ...]:
  """(image, has_image, text, has_text, id, has_id) of serialized tf.train.Examples [N]; a
  value is the feature's first bytes value ('' when missing). Raises on a record that is not
  an Example or whose feature is not a bytes list (the pre-check keeps those out)."""
  spec = {k: tf.io.VarLenFeature(tf.string) for k in keys}
  parsed = tf.io.parse_example(records, spec)
  out = []
  for k in keys:
    ragged = tf.RaggedTensor.from_sparse(parsed[k])
    first = ragged[:, :1].to_tensor(default_value=b'', shape=[tf.shape(records)[0], 1])
    out += [first[:, 0], ragged.row_lengths() > 0]
  return tuple(out)


def _bytes_at(s: tf.Tensor, pos: tf.Tensor, k: int) -> tf.Tensor:
  """int64 [N, k]: bytes pos .. pos + k of each string, zero past its end."""
  n = tf.cast(tf.strings.length(s), tf.int64)
  pos = tf.minimum(tf.cast(pos, tf.int64), n)
  piece = tf.strings.substr(s, pos, tf.fill(tf.shape(pos), tf.constant(k, tf.int64)))
  return tf.cast(tf.io.decode_raw(piece, tf.uint8, fixed_length=k), tf.int64)


def _le(b: tf.Tensor, at: int, size: int) -> tf.Tensor:
  """Little-endian unsigned integer of `size` bytes at column `at` of a byte matrix."""
  return sum(b[:, at + j] * 256**j for j in range(size))


def _be(b: tf.Tensor, at: int, size: int) -> tf.Tensor:
  """Big-endian unsigned integer of `size` bytes at column `at` of a byte matrix."""
  return sum(b[:, at + j] * 256**(size - 1 - j) for j in range(size))


def _starts(b: tf.Tensor, n: tf.Tensor, magic: bytes, at: int = 0) -> tf.Tensor:
  """Whether bytes at .. at + len(magic) of each row are `magic` (and present)."""
  hit = tf.reduce_all(b[:, at:at + len(magic)] == tf.constant(list(magic), tf.int64), axis=1)
  return hit & (n >= at + len(magic))


def _where(cases: list[tuple[tf.Tensor, tf.Tensor]], default: tf.Tensor) -> tf.Tensor:
  """The value of the first case whose condition holds, else default."""
  out = default
  for cond, value in reversed(cases):
    out = tf.where(cond, tf.cast(value, out.dtype), out)
  return out


def _webp_size(b: tf.Tensor, n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  minus = -tf.ones_like(n)
  vp8x, vp8l = _starts(b, n, b'VP8X', 12) & (n >= 30), _starts(b, n, b'VP8L', 12) & (n >= 25)
  vp8 = _starts(b, n, b'VP8 ', 12) & (n >= 30)
  bits, low14 = _le(b, 21, 4), lambda x: tf.bitwise.bitwise_and(x, 0x3FFF)
  h = _where([(vp8x, _le(b, 27, 3) + 1), (vp8l, low14(tf.bitwise.right_shift(bits, 14)) + 1),
              (vp8, low14(_le(b, 28, 2)))], minus)
  w = _where([(vp8x, _le(b, 24, 3) + 1), (vp8l, low14(bits) + 1),
              (vp8, low14(_le(b, 26, 2)))], minus)
  return h, w


def _jpeg_walk(images: tf.Tensor, n: tf.Tensor, active: tf.Tensor) -> tuple[tf.Tensor, ...]:
  """(height, width, offset of the first scan) of each JPEG, as filters._jpeg_info: the marker
  walk of all `active` rows at once, one marker per step."""
  minus = -tf.ones_like(n)

  def step(k, i, h, w, scan, active):
    b = _bytes_at(images, i, 9)
    marker, length = b[:, 1], _be(b, 2, 2)
    live = active & (i + 4 <= n) & (b[:, 0] == 0xFF)
    fill = live & (marker == 0xFF)
    bare = live & ~fill & ((marker == 0xD8) | (marker == 0x01) | ((marker >= 0xD0) &
                                                                 (marker <= 0xD7)))
    seg = live & ~fill & ~bare
    sos = seg & (marker == 0xDA)
    sof = (seg & ~sos & (marker >= 0xC0) & (marker <= 0xCF) & (marker != 0xC4) &
           (marker != 0xC8) & (marker != 0xCC))
    short = sof & (i + 9 > n)
    dead = (active & ~live) | short  # no marker where one must be, or cut short: (-1, -1, 0)
    h = tf.where(dead, minus, tf.where(sof & ~short, _be(b, 5, 2), h))
    w = tf.where(dead, minus, tf.where(sof & ~short, _be(b, 7, 2), w))
    scan = tf.where(sos, i, scan)
    i = _where([(fill, i + 1), (bare, i + 2), (seg & ~sos, i + 2 + length)], i)
    return k + 1, i, h, w, scan, active & ~dead & ~sos

  init = (tf.constant(0), tf.fill(tf.shape(n), tf.constant(2, tf.int64)), minus, minus,
          tf.zeros_like(n), active)
  _, _, h, w, scan, left = tf.while_loop(
      lambda k, *s: (k < filters.MAX_JPEG_STEPS) & tf.reduce_any(s[-1]), step, init)
  h, w = tf.where(left, minus, h), tf.where(left, minus, w)  # ran out of steps: as cut short
  return h, w, tf.where(left, tf.zeros_like(scan), scan)


def _has_end(images: tf.Tensor, n: tf.Tensor, scan: tf.Tensor) -> tf.Tensor:
  """Whether an end-of-image marker (FF D9) starts at or after `scan` (0: not looked for)."""
  start = tf.where(scan > 0, scan, n)
  tail = tf.strings.substr(images, start, n - start)
  return tf.strings.split(tail, sep=b'\xff\xd9', maxsplit=1).row_lengths() > 1


def header_sizes(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(format code: 0 none, 1 png, 2 jpeg, 3 gif, 4 bmp, 5 webp; height; width), int64 [N],
  as filters.image_format_and_size (-1 sizes: cut short)."""
  n = tf.cast(tf.strings.length(images), tf.int64)
  b = _bytes_at(images, tf.zeros_like(n), _HEAD)
  png = _starts(b, n, b'\x89PNG\r\n\x1a\n')
  jpeg = ~png & _starts(b, n, b'\xff\xd8\xff')
  gif = ~png & ~jpeg & (_starts(b, n, b'GIF87a') | _starts(b, n, b'GIF89a'))
  bmp = ~png & ~jpeg & ~gif & _starts(b, n, b'BM')
  webp = ~png & ~jpeg & ~gif & ~bmp & _starts(b, n, b'RIFF') & _starts(b, n, b'WEBP', 8)
  fmt = _where([(png, _PNG), (jpeg, _JPEG), (gif, _GIF), (bmp, _BMP), (webp, _WEBP)],
               tf.zeros_like(n))
  minus = -tf.ones_like(n)
  jh, jw, scan = _jpeg_walk(images, n, jpeg)
  cut = (scan > 0) & ~_has_end(images, n, scan)
  jh, jw = tf.where(cut, minus, jh), tf.where(cut, minus, jw)
  bmp_h = _le(b, 22, 4)
  bmp_h = tf.abs(tf.where(bmp_h >= 1 << 31, bmp_h - (1 << 32), bmp_h))
  bmp_w = _le(b, 18, 4)
  bmp_w = tf.where(bmp_w >= 1 << 31, bmp_w - (1 << 32), bmp_w)
  wh, ww = _webp_size(b, n)
  h = _where([(png & (n >= 24), _be(b, 20, 4)), (jpeg, jh), (gif & (n >= 10), _le(b, 8, 2)),
              (bmp & (n >= 26), bmp_h), (webp, wh)], minus)
  w = _where([(png & (n >= 24), _be(b, 16, 4)), (jpeg, jw), (gif & (n >= 10), _le(b, 6, 2)),
              (bmp & (n >= 26), bmp_w), (webp, ww)], minus)
  return fmt, h, w


@functools.lru_cache(maxsize=1)
def _space() -> str:
  """An RE2 class of the characters Python's str.isspace() (and str.strip()) treats as space."""
  codes = [c for c in range(sys.maxunicode + 1) if chr(c).isspace()]
  return '[' + ''.join(f'\\x{{{c:x}}}' for c in codes) + ']'


def _word_count(text: tf.Tensor) -> tf.Tensor:
  """Whitespace-separated words of each (valid UTF-8) text, as len(filters.unigrams(text))."""
  spaced = tf.strings.regex_replace(text, _space() + '+', ' ')
  words = tf.strings.regex_replace(tf.strings.regex_replace(spaced, '[^ ]+', 'x'), ' ', '')
  return tf.cast(tf.strings.length(words), tf.int64)


def _absurd(h: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
  """h * w > MAX_PIXELS without int64 overflow (sizes are up to 2^32; zero and negative
  sizes are decided by earlier rules)."""
  big = (h > filters.MAX_PIXELS) | (w > filters.MAX_PIXELS)
  return big | (tf.minimum(h, filters.MAX_PIXELS) * tf.minimum(w, filters.MAX_PIXELS) >
                filters.MAX_PIXELS)


def _ratio_over(h: tf.Tensor, w: tf.Tensor, ratio: float) -> tf.Tensor:
  """max(h, w) > ratio * min(h, w), in float64 as Python compares."""
  big, small = tf.cast(tf.maximum(h, w), tf.float64), tf.cast(tf.minimum(h, w), tf.float64)
  return big > tf.constant(ratio, tf.float64) * small


def reasons(image: tf.Tensor, has_image: tf.Tensor, text: tf.Tensor, has_text: tf.Tensor,
            checks: filters.Checks) -> tf.Tensor:
  """int32 [N] reason codes (filters.REASONS) of a batch of records, as filters.check."""
  if not supports(checks):
    raise ValueError('native_checks.reasons: max_shared_text / min_unigram_count need the '
                     'Python checks (filters.check)')
  fmt, h, w = header_sizes(image)
  n_text = tf.cast(tf.strings.length(text), tf.int64)
  valid = tf.equal(tf.strings.unicode_transcode(text, 'UTF-8', 'UTF-8', errors='replace',
                                                replacement_char=0xFFFD), text)
  rules = [(~has_image, 'missing_image'), (~has_text, 'missing_text'),
           (tf.strings.length(image) == 0, 'empty_image'), (fmt == 0, 'unsupported_format'),
           ((h == 0) | (w == 0), 'zero_size_image'), ((h < 0) | (w < 0), 'corrupt_image'),
           (_absurd(h, w), 'absurd_dimensions'),
           (_ratio_over(h, w, checks.max_image_aspect), 'extreme_aspect'),
           (n_text > checks.max_text_bytes, 'text_too_long'), (~valid, 'non_utf8_text'),
           (tf.strings.regex_full_match(text, _space() + '*'), 'empty_text')]
  if checks.min_image_side:
    rules.append((tf.minimum(h, w) < checks.min_image_side, 'small_image'))
  if checks.max_aspect_ratio:
    rules.append((_ratio_over(h, w, checks.max_aspect_ratio), 'aspect_ratio'))
  if checks.min_unigrams or checks.max_unigrams:
    words = _word_count(text)
    if checks.min_unigrams:
      rules.append((words < checks.min_unigrams, 'few_unigrams'))
    if checks.max_unigrams:
      rules.append((words > checks.max_unigrams, 'many_unigrams'))
  return _where([(cond, tf.constant(C[name], tf.int32)) for cond, name in rules],
                tf.zeros(tf.shape(image), tf.int32))
