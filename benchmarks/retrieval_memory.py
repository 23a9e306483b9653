"""Per-device memory of the sharded, chunked multi-caption retrieval as the gallery grows, on 8
fake CPU devices (compile only: XLA's planned temporary and argument bytes; nothing runs).

For N images and 5N captions (COCO's ratio) of dimension d, images sharded over the devices and
captions walked in chunks of --chunk, it compiles both directions (retrieval._i2t_counts and
_t2i_counts) and reports per-device temporary memory, against the full N x 5N similarity
matrix a brute-force evaluator holds.

Usage: python benchmarks/retrieval_memory.py [--images 1000,5000,25000] [--dim 640] [--chunk 1024]
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import datetime
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vlalign.evaluate import retrieval  # pylint: disable=wrong-import-position


def _mib(n: int) -> str:
  return f'{n / 2 ** 20:.1f} MiB'


def measure(n: int, dim: int, chunk: int, mesh: Mesh) -> dict:
  devices = mesh.devices.size
  n_pad = -(-n // devices) * devices
  m = 5 * n
  chunks = -(-m // chunk)
  shard = NamedSharding(mesh, P('images'))
  img = jax.ShapeDtypeStruct((n_pad, dim), jnp.float32, sharding=shard)
  valid = jax.ShapeDtypeStruct((n_pad,), jnp.bool_, sharding=shard)
  txt = jax.ShapeDtypeStruct((chunks, chunk, dim), jnp.float32)
  owner = jax.ShapeDtypeStruct((chunks, chunk), jnp.int32)
  out = {'images': n, 'captions': m}
  for name, fn in (('i2t', retrieval._i2t_counts), ('t2i', retrieval._t2i_counts)):  # pylint: disable=protected-access
    mem = fn.lower(img, valid, txt, owner, mesh, 'images', (1, 5, 10)).compile().memory_analysis()
    out[f'{name}_temp'] = int(mem.temp_size_in_bytes)
    out[f'{name}_args'] = int(mem.argument_size_in_bytes)
  out['full_matrix'] = n * m * 4
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--images', default='1000,5000,25000')
  ap.add_argument('--dim', type=int, default=640)
  ap.add_argument('--chunk', type=int, default=1024)
  args = ap.parse_args()
  mesh = Mesh(np.array(jax.devices()), ('images',))
  rows = [measure(int(n), args.dim, args.chunk, mesh) for n in args.images.split(',')]
  print(f'{jax.device_count()} devices, d = {args.dim}, caption chunk = {args.chunk}, float32; '
        'per-device bytes:\n')
  print('| images | captions | i2t temp | t2i temp | arguments (i2t) | full N x 5N matrix |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["images"]:,} | {r["captions"]:,} | {_mib(r["i2t_temp"])} | {_mib(r["t2i_temp"])} '
          f'| {_mib(r["i2t_args"])} | {_mib(r["full_matrix"])} |')
  print(json.dumps({'date': datetime.date.today().isoformat(), 'devices': jax.device_count(),
                    'dim': args.dim, 'chunk': args.chunk, 'rows': rows}))


if __name__ == '__main__':
  main()
