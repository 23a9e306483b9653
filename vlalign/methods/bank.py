"""A FIFO bank of embeddings (MoCo key queues, DeCLIP's nearest-neighbour text bank), sharded.

State (part of the train state, so checkpointed with it): {'entries': [size, dim] float32 unit
rows, 'ptr': int32 scalar}. An insertion of n rows writes the global slots ptr, ptr+1, ...,
ptr+n-1 (mod size) and advances ptr by n: a circular buffer, so the rows overwritten are always the
oldest ones. The bank starts full of random unit vectors (as MoCo's and DeCLIP's code do), so
every lookup and every queue logit is defined from the first step.

Global or per device: the bank is ONE global FIFO, the same for any device count (what a single
device would hold), not one bank per device as in DeCLIP's code. It is stored sharded: its rows
are split over the mesh's batch axes in contiguous blocks of size / D rows (sharding
P(batch_axes)), so each device holds size / D x dim. Keys are all-gathered (global batch order)
before they are enqueued and each device writes only the slots it owns (a masked select over its
own rows; the bank itself is never gathered). Readers send the queries to the bank instead:
gathered queries x local rows, then a reduction over devices (`nearest`, and the queue
log-sum-exp in methods/brivl.py). Everything is a pure function run inside the jitted step.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vlalign.losses import sharded


def init(key: jax.Array, size: int, dim: int) -> dict[str, jnp.ndarray]:
  """A bank of `size` random unit rows of width `dim`, pointer at 0."""
  entries = jax.random.normal(key, (size, dim), jnp.float32)
  entries = entries / jnp.linalg.norm(entries, axis=1, keepdims=True)
  return {'entries': entries, 'ptr': jnp.zeros((), jnp.int32)}


def shardings(mesh: Mesh, batch_axes: Sequence[str]) -> dict[str, NamedSharding]:
  """Rows split over the batch axes; the pointer replicated."""
  return {'entries': NamedSharding(mesh, P(tuple(batch_axes))), 'ptr': NamedSharding(mesh, P())}


def enqueue(bank: dict, keys: jnp.ndarray, mesh: Mesh,
            batch_axes: Sequence[str] = ('data',)) -> dict:
  """The bank after inserting `keys` [n, dim] (a global array sharded on batch_axes, n <= size)
  in their global order, oldest rows out. No gradient flows into the bank."""
  size = bank['entries'].shape[0]
  n = keys.shape[0]
  if n > size:
    raise ValueError(f'cannot enqueue {n} rows into a bank of {size}')
  keys = jax.lax.stop_gradient(keys).astype(bank['entries'].dtype)

  def body(entries, new, ptr, *, axis_name):
    axis = axis_name
    new = jax.lax.all_gather(new, axis, tiled=True)  # [n, dim] in global batch order
    rows = entries.shape[0]
    slot = jax.lax.axis_index(axis) * rows + jnp.arange(rows)  # global slot of each local row
    offset = jnp.mod(slot - ptr, size)  # position of the slot in this step's window
    take = offset < n
    return jnp.where(take[:, None], new[jnp.minimum(offset, n - 1)], entries)

  entries = sharded.run(body, mesh, batch_axes, (bank['entries'], keys, bank['ptr']),
                        (sharded.BATCH, sharded.BATCH, sharded.REPLICATED), out=sharded.BATCH)
  return {'entries': entries, 'ptr': jnp.mod(bank['ptr'] + n, size).astype(jnp.int32)}


def nearest(entries: jnp.ndarray, queries: jnp.ndarray, mesh: Mesh,
            batch_axes: Sequence[str] = ('data',)) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(rows, indices): for each query row [B, dim] (sharded on batch_axes) the bank row with the
  largest dot product (top-1 cosine for unit rows; ties go to the lowest index) and its global
  index, both sharded like the queries. No gradient (a lookup)."""
  queries = jax.lax.stop_gradient(queries).astype(entries.dtype)

  def body(local, q, *, axis_name):
    axis = axis_name
    b, rows = q.shape[0], local.shape[0]
    q_all = jax.lax.all_gather(q, axis, tiled=True)  # [B, dim]
    sims = q_all @ local.T  # [B, rows]: every query against this device's rows
    best = jnp.argmax(sims, axis=1)
    vals = jnp.take_along_axis(sims, best[:, None], axis=1)[:, 0]
    idx = jax.lax.axis_index(axis) * rows + best
    # Send each device the candidates for its own b queries: [D, b, ...], block i from device i.
    per_device = lambda t: jax.lax.all_to_all(t.reshape((-1, b) + t.shape[1:]), axis, 0, 0)
    cand_vals, cand_rows, cand_idx = per_device(vals), per_device(local[best]), per_device(idx)
    # The first best device wins: with contiguous blocks, the lowest global index among ties.
    win = jnp.argmax(cand_vals, axis=0)  # [b]
    pick = lambda t: jnp.take_along_axis(t, win.reshape((1, b) + (1,) * (t.ndim - 2)), axis=0)[0]
    return pick(cand_rows), pick(cand_idx)

  return sharded.run(body, mesh, batch_axes, (entries, queries),
                     (sharded.BATCH, sharded.BATCH), out=(sharded.BATCH, sharded.BATCH))
