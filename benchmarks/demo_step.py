"""Where the demo's step time goes on this CPU: the image stem's convolutions (lax against the
matmul form, model.image.stem_conv) and the input pipeline's resize (antialiased against plain
bilinear when enlarging). One JSON line per measurement.

Usage: python benchmarks/demo_step.py [--batch 512] [--repeats 8] [--data_dir DIR]

  stem lines: forward + backward (gradients of all parameters) of the demo's image tower alone,
    and of the text tower for scale, at the demo's batch, for the `hybrid` (demo default) and
    `conv` (configs/demo.py:conv) stems, each with stem_conv 'xla' and 'matmul'.
  resize lines (with --data_dir, an embedded-data cache such as $VLALIGN_DATA_DIR): wall and
    process-CPU seconds per batch of decoding + the train view over the cached training PNGs,
    with resize_shorter (antialias only when shrinking) and with antialias always on.
"""

import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from vlalign import config_lib  # pylint: disable=wrong-import-position
from vlalign.models import two_tower  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())
  t = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / repeats


def stems(batch: int, repeats: int) -> None:
  demo = config_lib.load_config_module(os.path.join(ROOT, 'configs', 'demo.py'))
  for option in ('', 'conv'):
    config = demo.get_config(option)
    s, length = config.data.image_size, config.data.max_len
    rng = np.random.RandomState(0)
    images = jnp.asarray(rng.randn(batch, s, s, 3), jnp.float32)
    tokens = jnp.asarray(rng.randint(5, 180, (batch, length)), jnp.int32)
    for impl in ('xla', 'matmul'):
      config.model.image.stem_conv = impl
      model = two_tower.build_model(config.model, 183, length)
      params = model.init(jax.random.PRNGKey(0), images[:2], tokens[:2])
      tower = jax.jit(jax.grad(lambda p: model.apply(p, images, method=model.encode_image).sum()))
      row = {'what': 'image tower fwd+bwd', 'stem': config.model.image.stem, 'stem_conv': impl,
             'image_size': s, 'batch': batch, 'sec': round(_time(lambda: tower(params), repeats), 4)}
      print(json.dumps(row), flush=True)
    text = jax.jit(jax.grad(lambda p: model.apply(p, tokens, method=model.encode_text).sum()))
    print(json.dumps({'what': 'text tower fwd+bwd', 'max_len': length, 'batch': batch,
                      'sec': round(_time(lambda: text(params), repeats), 4)}), flush=True)


def resize(data_dir: str, batch: int) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vlalign.data import image_ops  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(data_dir, 'embedded', '*', 'train', '*.tfrecord')))
  if not files:
    raise SystemExit(f'--data_dir {data_dir}: no embedded/*/train/*.tfrecord (run the demo once)')
  feature = {'image': tf.io.FixedLenFeature([], tf.string)}
  raw = tf.data.TFRecordDataset(files).map(
      lambda r: tf.io.parse_single_example(r, feature)['image']).take(10 * batch).cache()
  for _ in raw:
    pass

  def always_antialiased(img, size):
    shape = tf.cast(tf.shape(img)[:2], tf.float32)
    new = tf.cast(tf.math.round(shape * size / tf.reduce_min(shape)), tf.int32)
    return tf.image.resize(img, new, antialias=True)

  for name, fn in (('resize_shorter', image_ops.resize_shorter),
                   ('always antialiased', always_antialiased)):
    ds = raw.map(lambda b, fn=fn: image_ops.normalize(tf.image.random_crop(
        fn(image_ops.decode(b), 68), [64, 64, 3])), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch)
    t, c = time.perf_counter(), time.process_time()
    n = sum(1 for _ in ds)
    print(json.dumps({'what': 'decode + train view (64 px -> 68, crop 64)', 'resize': name,
                      'batch': batch,
                      'wall_sec_per_batch': round((time.perf_counter() - t) / n, 4),
                      'cpu_sec_per_batch': round((time.process_time() - c) / n, 4)}), flush=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batch', type=int, default=512)
  ap.add_argument('--repeats', type=int, default=8)
  ap.add_argument('--data_dir', default='')
  args = ap.parse_args()
  stems(args.batch, args.repeats)
  if args.data_dir:
    resize(args.data_dir, args.batch)


if __name__ == '__main__':
  main()
