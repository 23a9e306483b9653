"""One way to run a per-device loss body over the batch axes (jax.shard_map), and the
collective conventions the bodies share.

Every sharded loss in vlalign (softmax gather / blockwise, sigmoid, BriVL's queue loss, ViCHA's
distillation loss, the embedding bank) is `run(body, mesh, batch_axes, args, kinds)`: each
argument is either BATCH (split on its leading dimension over the batch axes: b of the B global
rows per device) or REPLICATED (whole on every device, e.g. the logit scale); the body receives
the local pieces and the collective axis name as `axis_name=`. Conventions inside a body:
  - a global row index is `axis_index * b + local index` (`positives`): device r holds rows
    r*b .. r*b + b - 1 of the global batch, so the positive of local row i is column r*b + i
    of an all-gathered (`gather`) matrix;
  - a loss or accuracy over the global batch is `psum(local sum) / B` (`global_mean`), a
    replicated scalar, so outputs declared REPLICATED are the same on every device.
"""

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from vlalign.losses import manual

BATCH = 'batch'
REPLICATED = 'replicated'


def _spec(kind: str, axes: tuple[str, ...]) -> P:
  if kind not in (BATCH, REPLICATED):
    raise ValueError(f'an argument is {BATCH!r} or {REPLICATED!r}, got {kind!r}')
  return P(axes) if kind == BATCH else P()


def run(body: Callable[..., Any], mesh: Mesh, batch_axes: Sequence[str], args: Sequence[Any],
        kinds: Sequence[str], out: Any = REPLICATED, **static: Any) -> Any:
  """body(*local args, axis_name=..., **static) on every device of `mesh`; `kinds` says per
  argument BATCH or REPLICATED, `out` the same for the outputs (one kind for the whole output
  tree, or a tuple of kinds matching a tuple output)."""
  if len(args) != len(kinds):
    raise ValueError(f'{len(args)} arguments but {len(kinds)} kinds')
  axes = tuple(batch_axes)
  in_specs = tuple(_spec(k, axes) for k in kinds)
  out_specs = (tuple(_spec(k, axes) for k in out) if isinstance(out, tuple) else
               _spec(out, axes))
  fn = functools.partial(body, axis_name=manual.axis_name(axes), **static)
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*args)


def gather(x: jnp.ndarray, axis_name) -> jnp.ndarray:
  """Every device's rows of `x` in global batch order ([B, ...] from [b, ...])."""
  return jax.lax.all_gather(x, axis_name, tiled=True)


def positives(b: int, axis_name) -> jnp.ndarray:
  """The global column of each of this device's b rows (its positive in a gathered matrix)."""
  return jax.lax.axis_index(axis_name) * b + jnp.arange(b)


def global_mean(local_sum: jnp.ndarray, b: int, axis_name) -> jnp.ndarray:
  """psum of per-device sums over b local rows each, divided by the global batch B."""
  return jax.lax.psum(local_sum, axis_name) / (b * jax.lax.axis_size(axis_name))
