"""Builders of broken and unusual records for the input tests: img2dataset-style WebDataset
shards with a planted share of every kind of bad sample, and the counts that were planted."""

import io
import json
import os
import struct
import tarfile
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt, **kw)
  return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
  """A PNG signature and IHDR chunk claiming the given size (no pixel data)."""
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  chunk = b'IHDR' + ihdr
  return (b'\x89PNG\r\n\x1a\n' + struct.pack('>I', len(ihdr)) + chunk +
          struct.pack('>I', zlib.crc32(chunk)))


def embedded_pairs(pattern: str, n: int) -> list[tuple[bytes, bytes, str]]:
  """(image PNG bytes, caption bytes, id) of the first n records of the shards matching pattern."""
  spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ('image', 'text', 'id')}
  files = sorted(tf.io.gfile.glob(pattern))
  out = []
  for rec in tf.data.TFRecordDataset(files).take(n):
    ex = tf.io.parse_single_example(rec, spec)
    out.append((ex['image'].numpy(), ex['text'].numpy(), ex['id'].numpy().decode()))
  return out


def unusual_images(seed: int = 0) -> dict[str, tuple[str, bytes]]:
  """Valid images in unusual modes or formats: name -> (tar extension, bytes). Each must be kept
  and converted to RGB."""
  rng = np.random.default_rng(seed)
  rgb = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
  gray16 = Image.fromarray((rng.random((40, 56)) * 65535).astype(np.uint16))
  return {'grayscale': ('jpg', encode(rgb.convert('L'), 'JPEG')),
          'cmyk': ('jpg', encode(rgb.convert('CMYK'), 'JPEG')),
          'rgba': ('png', encode(rgb.convert('RGBA'), 'PNG')),
          'palette': ('png', encode(rgb.convert('P'), 'PNG')),
          'png16': ('png', encode(gray16, 'PNG')),
          'webp_as_jpg': ('jpg', encode(rgb, 'WEBP')),
          'png_as_jpg': ('jpg', encode(rgb, 'PNG'))}


def broken_samples(good_jpeg: bytes, seed: int = 0) -> list[tuple[str, dict]]:
  """(expected reason, {ext: bytes}) of one bad sample of every per-record kind."""
  rng = np.random.default_rng(seed)
  tiff = encode(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)), 'TIFF')
  cap = b'a red circle'
  corrupt = bytearray(good_jpeg)
  body = slice(len(corrupt) // 3, len(corrupt) - 2)
  corrupt[body] = rng.integers(0, 255, len(corrupt[body]), dtype=np.uint8).tobytes()
  return [
      ('corrupt_image', {'jpg': bytes(corrupt), 'txt': cap}),
      ('corrupt_image', {'jpg': good_jpeg[:len(good_jpeg) // 2], 'txt': cap}),  # truncated
      ('unsupported_format', {'jpg': tiff, 'txt': cap}),
      ('unsupported_format', {'jpg': rng.integers(0, 255, 300, dtype=np.uint8).tobytes(),
                              'txt': cap}),
      ('zero_size_image', {'png': png_header(0, 64), 'txt': cap}),
      ('absurd_dimensions', {'png': png_header(200_000, 200_000), 'txt': cap}),
      ('empty_image', {'jpg': b'', 'txt': cap}),
      ('empty_text', {'jpg': good_jpeg, 'txt': b''}),
      ('empty_text', {'jpg': good_jpeg, 'txt': b' \t\n '}),
      ('non_utf8_text', {'jpg': good_jpeg, 'txt': b'caf\xe9 \xff\xfe'}),
      ('text_too_long', {'jpg': good_jpeg, 'txt': b'word ' * 220_000}),  # about a megabyte
      ('missing_image', {'txt': cap, 'json': b'{}'}),
      ('missing_text', {'jpg': good_jpeg, 'json': json.dumps({'url': 'x'}).encode()}),
      ('extreme_aspect', {'png': wide_png(20_000), 'txt': cap}),  # 1 x 20000: GBs once resized
      ('json_too_deep', {'jpg': good_jpeg, 'json': deep_json(100_000)}),
      ('corrupt_image', {'jpg': good_jpeg[:-2], 'txt': cap}),  # only the end-of-image marker cut
  ]


def wide_png(width: int, height: int = 1) -> bytes:
  """A valid height x width grey PNG (a few hundred bytes for any width)."""
  return encode(Image.new('L', (width, height), 128), 'PNG')


def deep_json(depth: int) -> bytes:
  """A JSON object whose caption sits after `depth` nested arrays (RecursionError bait)."""
  return b'{"x": ' + b'[' * depth + b']' * depth + b', "caption": "deep"}'


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC-32C (written here independently of vlalign's reader)."""
  import google_crc32c  # pylint: disable=g-import-not-at-top
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(data: bytes, claimed: int | None = None) -> bytes:
  """One TFRecord record; `claimed` overrides the length field (with a valid length CRC)."""
  head = struct.pack('<Q', len(data) if claimed is None else claimed)
  return (head + struct.pack('<I', masked_crc(head)) + data +
          struct.pack('<I', masked_crc(data)))


def length_bomb() -> bytes:
  """76 bytes whose first record claims 2^60 bytes with a valid length CRC: TensorFlow's
  record reader allocates the claim and dies (SIGSEGV)."""
  return tfrecord_frame(b'\0' * 60, claimed=1 << 60)


def write_tar(path: str, samples: list[tuple[str, dict]]) -> None:
  """img2dataset's layout: <key>.<ext> members, a sample's members next to each other."""
  with tarfile.open(path, 'w') as tar:
    for key, parts in samples:
      for ext, data in parts.items():
        info = tarfile.TarInfo(f'{key}.{ext}')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build_wds(out_dir: str, pairs: list[tuple[bytes, bytes, str]]) -> dict:
  """Writes 4 shards: two clean-ish ones mixing good pairs, unusual images and every bad kind,
  one truncated in the middle of a sample, one that is not a tar at all. Returns
  {'good_ids': ids that must come through, 'skipped': {reason: planted count}}."""
  os.makedirs(out_dir, exist_ok=True)
  good_jpeg = encode(Image.open(io.BytesIO(pairs[0][0])).convert('RGB'), 'JPEG')
  goods = [(uid.replace('/', '_'), {'png': img, 'txt': txt, 'json': json.dumps(
      {'key': uid, 'caption': txt.decode()}).encode()}) for img, txt, uid in pairs]
  unusual = [(f'unusual_{name}', {ext: data, 'txt': f'an unusual {name} image'.encode()})
             for name, (ext, data) in unusual_images().items()]
  bad = [(f'bad{i:02d}_{reason}', parts) for i, (reason, parts) in enumerate(
      broken_samples(good_jpeg))]
  # A caption only in the json (img2dataset writes both; the txt may be missing).
  json_only = [('json_caption', {'jpg': good_jpeg, 'json': json.dumps(
      {'caption': 'a caption from the json'}).encode()})]
  half = len(goods) // 2
  shard0 = goods[:half] + bad[:len(bad) // 2] + unusual[:3]
  shard1 = goods[half:-4] + bad[len(bad) // 2:] + unusual[3:] + json_only
  write_tar(os.path.join(out_dir, '00000.tar'), shard0)
  write_tar(os.path.join(out_dir, '00001.tar'), shard1)
  # Truncated: the first 3 samples complete, then the file stops inside the 4th sample's image.
  tail = goods[-4:]
  full = os.path.join(out_dir, 'full.tmp')
  write_tar(full, tail)
  with open(full, 'rb') as f:
    data = f.read()
  os.remove(full)
  cut = data.index(f'{tail[3][0]}.png'.encode()) + 512 + 100  # header, then 100 bytes of PNG
  with open(os.path.join(out_dir, '00002.tar'), 'wb') as f:
    f.write(data[:cut])
  with open(os.path.join(out_dir, '00003.tar'), 'wb') as f:
    f.write(b'this is an HTML error page, not a tar file\n' * 20)
  skipped = {}
  for reason, _ in broken_samples(good_jpeg):
    skipped[reason] = skipped.get(reason, 0) + 1
  skipped['truncated_file'] = 1
  skipped['unreadable_shard'] = 1
  good_ids = ([k for k, _ in shard0 + shard1 if not k.startswith('bad')] +
              [k for k, _ in tail[:3]])
  return {'good_ids': sorted(good_ids), 'skipped': dict(sorted(skipped.items())),
          'unusual': sorted(k for k, _ in unusual)}
