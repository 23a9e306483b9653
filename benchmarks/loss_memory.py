"""Per-device loss memory against the global batch, on 8 fake CPU devices (compile only).

For each global batch B it compiles value_and_grad (w.r.t. both embeddings) of each loss for
x, y [B, d] sharded over 8 devices and reads the per-device temporary memory XLA plans
(compiled.memory_analysis().temp_size_in_bytes; nothing is allocated, no step runs):

  naive          every device gathers both modalities and forms the B x B logits
  gather         ours: local b rows x gathered B columns (b x B logits per device)
  blockwise      ours: the gathered columns in chunks of --chunk (b x chunk logits), custom_vjp
  sigmoid_ring   SigLIP loss, texts passed round the device ring (b x b logits)
  sigmoid_gather SigLIP loss, local rows x gathered columns (b x B logits)

Usage: python benchmarks/loss_memory.py [--batches 1024,4096,16384,65536] [--dim 640]
Prints a Markdown table, then one JSON line with every figure.
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import datetime
import json
import platform
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vlalign import parallel  # pylint: disable=wrong-import-position
from vlalign.losses import blockwise, contrastive, manual, sigmoid  # pylint: disable=wrong-import-position

SMOOTHING = 0.1


def naive_softmax(x, y, scale, mesh, batch_axes=('data',)):
  """The formulation we avoid: every device gathers both modalities and forms B x B logits."""
  name = manual.axis_name(batch_axes)

  def body(a, b, s):
    a_all = jax.lax.all_gather(a, name, tiled=True)
    b_all = jax.lax.all_gather(b, name, tiled=True)
    n = a_all.shape[0]
    logits = s * a_all @ b_all.T
    targets = (1 - SMOOTHING) * jnp.eye(n) + SMOOTHING / n
    loss = -(targets * jax.nn.log_softmax(logits, axis=1)).sum() / n
    loss = loss - (targets * jax.nn.log_softmax(logits.T, axis=1)).sum() / n
    return jax.lax.pmean(loss, name)  # identical on every device
  fn = jax.shard_map(body, mesh=mesh, in_specs=(P(batch_axes), P(batch_axes), P()),
                     out_specs=P())
  return fn(x, y, scale)


def loss_fns(chunk: int):
  """name -> f(x, y, mesh) returning the scalar loss."""
  bias = jnp.float32(-10.0)
  return {
      'naive': lambda x, y, m: naive_softmax(x, y, jnp.float32(10.0), m),
      'gather': lambda x, y, m: contrastive.softmax_contrastive(
          x, y, jnp.float32(10.0), m, label_smoothing=SMOOTHING)['loss'],
      'blockwise': lambda x, y, m: blockwise.softmax_contrastive(
          x, y, jnp.float32(10.0), m, label_smoothing=SMOOTHING, chunk=chunk)['loss'],
      'sigmoid_ring': lambda x, y, m: sigmoid.sigmoid_loss(
          x, y, jnp.float32(10.0), bias, m, impl='ring')['loss'],
      'sigmoid_gather': lambda x, y, m: sigmoid.sigmoid_loss(
          x, y, jnp.float32(10.0), bias, m, impl='gather')['loss'],
  }


def temp_bytes(fn, batch: int, dim: int, mesh) -> int:
  """Per-device temporary bytes of the compiled value_and_grad of fn w.r.t. x and y."""
  spec = jax.ShapeDtypeStruct((batch, dim), jnp.float32,
                              sharding=NamedSharding(mesh, P(('data',))))
  vg = jax.jit(jax.value_and_grad(lambda x, y: fn(x, y, mesh), argnums=(0, 1)))
  return int(vg.lower(spec, spec).compile().memory_analysis().temp_size_in_bytes)


def _fmt(n: int) -> str:
  for unit, size in (('GiB', 2 ** 30), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
    if n >= size:
      return f'{n / size:.1f} {unit}'
  return f'{n} B'


def table(results: dict, batches: list[int], dim: int, devices: int) -> str:
  """Markdown table: one row per global batch, one column per loss (growth x vs previous row)."""
  names = list(results)
  gathered = {b: 2 * b * dim * 4 for b in batches}  # x_all and y_all, float32
  lines = ['| global batch B | b per device | ' + ' | '.join(names) + ' | gathered x, y (2 B d) |',
           '|---' * (len(names) + 3) + '|']
  for i, b in enumerate(batches):
    cells = []
    for name in names:
      v = results[name][str(b)]
      grow = f' (x{v / results[name][str(batches[i - 1])]:.1f})' if i else ''
      cells.append(_fmt(v) + grow)
    lines.append(f'| {b:,} | {b // devices:,} | ' + ' | '.join(cells) + f' | {_fmt(gathered[b])} |')
  return '\n'.join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--batches', default='1024,4096,16384,65536')
  ap.add_argument('--dim', type=int, default=640)
  ap.add_argument('--chunk', type=int, default=1024)
  ap.add_argument('--losses', default='naive,gather,blockwise,sigmoid_ring,sigmoid_gather')
  args = ap.parse_args()
  batches = [int(b) for b in args.batches.split(',')]
  mesh = parallel.make_mesh({'data': -1})
  fns = loss_fns(args.chunk)
  results = {}
  for name in args.losses.split(','):
    results[name] = {str(b): temp_bytes(fns[name], b, args.dim, mesh) for b in batches}
    print(f'{name}: ' + ', '.join(_fmt(v) for v in results[name].values()), file=sys.stderr,
          flush=True)
  devices = jax.device_count()
  print(f'Per-device peak temporary memory of value_and_grad(loss) w.r.t. the embeddings, '
        f'{devices} devices, d = {args.dim}, blockwise chunk = {args.chunk}, float32:\n')
  print(table(results, batches, args.dim, devices))
  print(json.dumps({'date': datetime.date.today().isoformat(), 'machine': platform.machine(),
                    'cpus': os.cpu_count(), 'devices': devices, 'dim': args.dim,
                    'chunk': args.chunk, 'temp_bytes': results}))


if __name__ == '__main__':
  main()
