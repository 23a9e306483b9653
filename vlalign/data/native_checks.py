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

import numpy as np
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
    out += _first_values(parsed[k], tf.shape(records, out_type=tf.int64)[0])
  return tuple(out)


def _first_values(sparse: tf.SparseTensor, n: tf.Tensor) -> list[tf.Tensor]:
  """[first value of each row ('' when none), whether it has one] of a [n, None] sparse string
  tensor; the values themselves when every row has exactly one (no copy of image bytes)."""
  rows, cols = sparse.indices[:, 0], sparse.indices[:, 1]
  has = tf.math.bincount(rows, minlength=n, maxlength=n, dtype=tf.int64) > 0
  one_each = tf.equal(tf.size(rows, out_type=tf.int64), n) & tf.reduce_all(tf.equal(cols, 0))

  def gathered():
    firsts = tf.reshape(tf.where(tf.equal(cols, 0)), [-1])
    return tf.scatter_nd(tf.gather(sparse.indices[:, :1], firsts),
                         tf.gather(sparse.values, firsts), tf.reshape(n, [1]))

  value = tf.cond(one_each, lambda: tf.identity(sparse.values), gathered)
  return [tf.reshape(value, tf.reshape(n, [1])), has]


def _bytes_at(s: tf.Tensor, n: tf.Tensor, pos: tf.Tensor, k: int) -> tf.Tensor:
  """int64 [N, k]: bytes pos .. pos + k of each string (length n), zero past its end."""
  piece = tf.strings.substr(s, tf.minimum(pos, n), tf.fill(tf.shape(pos), tf.constant(k, tf.int64)))
  return tf.cast(tf.io.decode_raw(piece, tf.uint8, fixed_length=k), tf.int64)


def _table(rows: list[tuple[int, int, bool]]) -> np.ndarray:
  """[_HEAD, len(rows)] weights: header bytes @ table = the unsigned integers of `size` bytes at
  `at` (little-endian when `le`), one column per row."""
  table = np.zeros([_HEAD, len(rows)], np.int64)
  for f, (at, size, le) in enumerate(rows):
    for j in range(size):
      table[at + j, f] = 256**(j if le else size - 1 - j)
  return table


# Size fields of the header (filters.image_format_and_size): column -> (at, size, little-endian).
_FIELDS = {'png_w': (16, 4, False), 'png_h': (20, 4, False), 'gif_w': (6, 2, True),
           'gif_h': (8, 2, True), 'bmp_w': (18, 4, True), 'bmp_h': (22, 4, True),
           'vp8x_w': (24, 3, True), 'vp8x_h': (27, 3, True), 'vp8l_bits': (21, 4, True),
           'vp8_w': (26, 2, True), 'vp8_h': (28, 2, True)}
_FIELD_TABLE = _table(list(_FIELDS.values()))
# Magic bytes: column -> (at, bytes).
_MAGIC = {'png': (0, b'\x89PNG\r\n\x1a\n'), 'jpeg': (0, b'\xff\xd8\xff'), 'gif87': (0, b'GIF87a'),
          'gif89': (0, b'GIF89a'), 'bmp': (0, b'BM'), 'riff': (0, b'RIFF'), 'webp': (8, b'WEBP'),
          'vp8x': (12, b'VP8X'), 'vp8l': (12, b'VP8L'), 'vp8': (12, b'VP8 ')}


def _magic_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  pattern, mask = np.zeros([len(_MAGIC), _HEAD], np.int64), np.zeros([len(_MAGIC), _HEAD], np.int64)
  for m, (at, magic) in enumerate(_MAGIC.values()):
    pattern[m, at:at + len(magic)], mask[m, at:at + len(magic)] = list(magic), 1
  return pattern, mask, np.array([at + len(magic) for at, magic in _MAGIC.values()], np.int64)


def _where(cases: list[tuple[tf.Tensor, tf.Tensor]], default: tf.Tensor) -> tf.Tensor:
  """The value of the first case whose condition holds, else default."""
  out = default
  for cond, value in reversed(cases):
    out = tf.where(cond, tf.cast(value, out.dtype), out)
  return out


def _signed32(x: tf.Tensor) -> tf.Tensor:
  return tf.where(x >= 1 << 31, x - (1 << 32), x)


# The JPEG marker after FF, by kind: a fill byte, a marker without a length, start of scan,
# start of frame (holds the size), any other segment.
_FILL, _BARE, _SOS, _SOF, _SEGMENT = range(5)
_MARKERS = np.full([256], _SEGMENT, np.int64)
_MARKERS[[0xD8, 0x01] + list(range(0xD0, 0xD8))] = _BARE
_MARKERS[[m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)]] = _SOF
_MARKERS[0xDA], _MARKERS[0xFF] = _SOS, _FILL


def _jpeg_walk(images: tf.Tensor, n: tf.Tensor, active: tf.Tensor) -> tuple[tf.Tensor, ...]:
  """(height, width, offset of the first scan) of each JPEG, as filters._jpeg_info: the marker
  walk of all `active` rows at once, one marker per step."""
  markers = tf.constant(_MARKERS)

  def step(i, sof, scan, active, dead):
    b = _bytes_at(images, n, i, 4)
    live = active & (i + 4 <= n) & tf.equal(b[:, 0], 0xFF)
    kind = tf.gather(markers, b[:, 1])
    frame = live & tf.equal(kind, _SOF)
    short = frame & (i + 9 > n)
    end = live & tf.equal(kind, _SOS)
    dead = dead | (active & ~live) | short  # no marker where one must be, or cut short
    advance = _where([(tf.equal(kind, _FILL), 1), (tf.equal(kind, _BARE), 2)], 2 + b[:, 2] * 256 + b[:, 3])
    return (tf.where(active, i + advance, i), tf.where(frame, i, sof), tf.where(end, i, scan),
            active & live & ~short & ~end, dead)

  zero = tf.zeros_like(n)
  _, (_, sof, scan, left, dead) = tf.while_loop(  # (a loop costs less here than unrolled steps)
      lambda k, s: (k < filters.MAX_JPEG_STEPS) & tf.reduce_any(s[3]),
      lambda k, s: (k + 1, step(*s)), (tf.constant(0), (zero + 2, zero, zero, active,
                                                         tf.zeros_like(active))))
  bad = dead | left | tf.equal(sof, 0)  # cut short, out of steps, or no frame header
  size = _bytes_at(images, n, sof + 5, 4)
  minus = -tf.ones_like(n)
  h = tf.where(bad, minus, size[:, 0] * 256 + size[:, 1])
  w = tf.where(bad, minus, size[:, 2] * 256 + size[:, 3])
  return h, w, tf.where(dead | left, zero, scan)


def _has_end(images: tf.Tensor, n: tf.Tensor, scan: tf.Tensor) -> tf.Tensor:
  """Whether an end-of-image marker (FF D9) starts at or after `scan` (0: not looked for):
  looked for in the last KB first, the rest only for the rows not found there (as filters)."""
  look = scan > 0
  found = _contains_end(images, n, tf.where(look, tf.maximum(scan, n - 1024), n))
  rest = look & ~found
  return found | tf.cond(tf.reduce_any(rest),
                         lambda: _contains_end(images, n, tf.where(rest, scan, n)),
                         lambda: tf.zeros_like(rest))


def _contains_end(images: tf.Tensor, n: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
  tail = tf.strings.substr(images, start, n - start)
  return tf.strings.split(tail, sep=b'\xff\xd9', maxsplit=1).row_lengths() > 1


def header_sizes(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(format code: 0 none, 1 png, 2 jpeg, 3 gif, 4 bmp, 5 webp; height; width), int64 [N],
  as filters.image_format_and_size (-1 sizes: cut short)."""
  n = tf.cast(tf.strings.length(images), tf.int64)
  b = _bytes_at(images, n, tf.zeros_like(n), _HEAD)
  pattern, mask, need = _magic_tables()
  differ = tf.cast(tf.not_equal(b[:, None, :], pattern[None]), tf.int64) * mask[None]
  hits = tf.equal(tf.reduce_sum(differ, axis=2), 0) & (n[:, None] >= need[None])
  m = {name: hits[:, k] for k, name in enumerate(_MAGIC)}
  png, jpeg = m['png'], ~m['png'] & m['jpeg']
  gif = ~png & ~jpeg & (m['gif87'] | m['gif89'])
  bmp = ~png & ~jpeg & ~gif & m['bmp']
  webp = ~png & ~jpeg & ~gif & ~bmp & m['riff'] & m['webp']
  fmt = _where([(png, _PNG), (jpeg, _JPEG), (gif, _GIF), (bmp, _BMP), (webp, _WEBP)],
               tf.zeros_like(n))
  v = tf.linalg.matmul(b, tf.constant(_FIELD_TABLE))
  f = {name: v[:, k] for k, name in enumerate(_FIELDS)}
  jh, jw, scan = _jpeg_walk(images, n, jpeg)
  cut = (scan > 0) & ~_has_end(images, n, scan)
  bits, low14 = f['vp8l_bits'], lambda x: tf.bitwise.bitwise_and(x, 0x3FFF)
  vp8x, vp8l = webp & m['vp8x'] & (n >= 30), webp & m['vp8l'] & (n >= 25)
  vp8 = webp & m['vp8'] & (n >= 30)
  minus = -tf.ones_like(n)
  h = _where([(png & (n >= 24), f['png_h']), (jpeg & cut, minus), (jpeg, jh),
              (gif & (n >= 10), f['gif_h']), (bmp & (n >= 26), tf.abs(_signed32(f['bmp_h']))),
              (vp8x, f['vp8x_h'] + 1), (vp8l, low14(tf.bitwise.right_shift(bits, 14)) + 1),
              (vp8, low14(f['vp8_h']))], minus)
  w = _where([(png & (n >= 24), f['png_w']), (jpeg & cut, minus), (jpeg, jw),
              (gif & (n >= 10), f['gif_w']), (bmp & (n >= 26), _signed32(f['bmp_w'])),
              (vp8x, f['vp8x_w'] + 1), (vp8l, low14(bits) + 1), (vp8, low14(f['vp8_w']))],
             minus)
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
