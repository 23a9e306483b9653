"""Peak memory of reading hostile shards (issue 18 items 5 and 6) against a normal shard, each in
a fresh process: read every record with the pipeline's readers (sources.read_wds /
read_tfrecord, which run filters.check) and decode + resize + crop every kept image the way the
eval view does. Prints one JSON line per case: the process's resident memory before reading,
its peak while reading (sampled every ms) and that peak's ratio to the normal shard's.

  python benchmarks/bomb_memory.py [--workdir=/tmp/bombs]

Cases: normal (64 samples of 256x256 JPEG + caption); wide_png (a 1 x 1,000,000 PNG, 2 KB: its
short side resized to 52 would be 52 x 52M x 3 floats, 32 GB); big_member (a tar whose .txt
member is 2 GiB: a sparse file); gzip_tar (that tar gzipped: 2 MB inflating to 2 GiB);
length_bomb (76-byte TFRecord claiming 2^60 bytes).
"""

import argparse
import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_cases(d: str) -> dict[str, str]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, ROOT)
  from tests.data import bad_data  # pylint: disable=g-import-not-at-top
  os.makedirs(d, exist_ok=True)
  rng = np.random.default_rng(0)
  jpeg = bad_data.encode(Image.fromarray(rng.integers(0, 255, (256, 256, 3), np.uint8)), 'JPEG')
  cap = b'a photo of something'
  cases = {}
  cases['normal'] = os.path.join(d, 'normal.tar')
  bad_data.write_tar(cases['normal'], [(f'n{i}', {'jpg': jpeg, 'txt': cap}) for i in range(64)])
  cases['wide_png'] = os.path.join(d, 'wide.tar')
  bad_data.write_tar(cases['wide_png'], [('w0', {'png': bad_data.wide_png(1_000_000),
                                                 'txt': cap})])
  cases['big_member'] = os.path.join(d, 'big.tar')
  with open(cases['big_member'], 'wb') as f:  # header, then 2 GiB of (sparse) zeros
    info = tarfile.TarInfo('b0.txt')
    info.size = 2 << 30
    f.write(info.tobuf())
    f.seek(512 + info.size + 1024 - 1)
    f.write(b'\0')
  cases['gzip_tar'] = os.path.join(d, 'big.tar.gz')
  if not os.path.exists(cases['gzip_tar']):
    with open(cases['big_member'], 'rb') as src, gzip.open(cases['gzip_tar'], 'wb') as dst:
      while chunk := src.read(64 << 20):
        dst.write(chunk)
  cases['length_bomb'] = os.path.join(d, 'bomb.tfrecord')
  with open(cases['length_bomb'], 'wb') as f:
    f.write(bad_data.length_bomb())
  return cases


def _measure(path: str) -> dict:
  """In this process: read and decode `path` as the pipeline does; peak RSS and counts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, ROOT)
  from vlalign import config_lib  # pylint: disable=g-import-not-at-top
  from vlalign.data import filters, image_ops, sources  # pylint: disable=g-import-not-at-top
  d = config_lib.base_config().data
  checks = filters.Checks.from_config(d)
  if path.endswith('.tfrecord'):
    records = sources.read_tfrecord(path, ('image', 'text', 'id'), checks)
  else:
    records = sources.read_wds(path, checks)
  image_ops.eval_view(image_ops.decode(tf.constant(_tiny_png())), resize=d.resize_size,
                      crop=d.image_size).numpy()  # warm the ops up before measuring
  sampler = _RssSampler()
  counts = {}
  for image, _, _, reason in records:
    if reason == 0:
      img = image_ops.decode(tf.constant(image))
      image_ops.eval_view(img, resize=d.resize_size, crop=d.image_size).numpy()
    counts[filters.REASONS[reason]] = counts.get(filters.REASONS[reason], 0) + 1
  before, peak = sampler.stop()
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {'process_peak_rss_mb': round(rss, 1), 'rss_before_mb': round(before, 1),
          'reading_peak_rss_mb': round(peak, 1), 'records': counts}


def _tiny_png() -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.new('RGB', (8, 8)).save(buf, 'PNG')
  return buf.getvalue()


class _RssSampler:
  """Resident memory of this process, sampled every millisecond on a thread (MB)."""

  def __init__(self):
    self._page = os.sysconf('SC_PAGE_SIZE') / 2**20
    self.before = self.peak = self._rss()
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _rss(self) -> float:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * self._page

  def _run(self) -> None:
    while not self._done.wait(0.001):
      self.peak = max(self.peak, self._rss())

  def stop(self) -> tuple[float, float]:
    self._done.set()
    self._thread.join()
    return self.before, max(self.peak, self._rss())


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='/tmp/vlalign_bombs')
  parser.add_argument('--measure', default='')
  args = parser.parse_args()
  if args.measure:
    print(json.dumps(_measure(args.measure)))
    return
  cases = _write_cases(args.workdir)
  base = None
  for name, path in cases.items():
    out = subprocess.run([sys.executable, __file__, f'--measure={path}'], capture_output=True,
                         text=True, check=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
    row = json.loads(out.stdout.strip().splitlines()[-1])
    base = base or row['reading_peak_rss_mb']
    row.update(case=name, file_bytes=os.path.getsize(path),
               reading_peak_ratio_to_normal=round(row['reading_peak_rss_mb'] / base, 2))
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
