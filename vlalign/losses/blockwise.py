"""Softmax contrastive loss whose per-device logits stay at b x chunk, whatever the global batch.

Same mathematics and outputs as contrastive.softmax_contrastive: each device scores its b local
rows against the B columns of the other modality from all devices, positives at r * b + i. It
never forms the b x B logits, nor the gathered B x d columns: it walks the columns in steps, each
all-gathering about `chunk` of them (the same number of local columns from every device), and
keeps a running maximum and sum of exponentials per row (a streaming log-sum-exp). The backward
pass (a jax.custom_vjp) walks the steps again, gathers each chunk anew, recomputes its logits from
the saved log-sum-exp and reduce-scatters the chunk's column gradients to the devices that own
them. Per device: b x chunk logits, chunk x d gathered columns, and b x d local arrays.

Only the log-sum-exp needs the columns one by one: the positive logit is s * x_i . y_i (the
local pair) and the label-smoothing term is s * x_i . mean_j(y_j), both cheap in closed form.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from vlalign.losses import manual, sharded


def _steps(b: int, size: int, chunk: int) -> tuple[int, int]:
  """(n, s): n steps, each taking s local columns from each of `size` devices (s * size >= the
  requested chunk where the batch allows, s <= b)."""
  s = min(-(-chunk // size), b)
  return -(-b // s), s


def _local_blocks(cols: jnp.ndarray, n: int, s: int) -> jnp.ndarray:
  """Local columns [b, d] zero-padded to n * s rows and split into [n, s, d]."""
  cols = jnp.pad(cols, ((0, n * s - cols.shape[0]), (0, 0)))
  return cols.reshape(n, s, cols.shape[1])


def _chunk(rows, local_blk, scale, k, b, name):
  """Step k: gathers chunk k ([size * s, d], device-major) and returns it, the raw products and
  scaled logits of `rows` against it (padding columns -> -inf), and each column's global index."""
  blk = jax.lax.all_gather(local_blk, name, tiled=True)
  s = local_blk.shape[0]
  q = jnp.arange(blk.shape[0])
  j = k * s + q % s  # the column's row on its own device
  raw = rows @ blk.T
  return blk, raw, jnp.where(j < b, scale * raw, -jnp.inf), (q // s) * b + j


def _lse_forward(rows, blocks, scale, b, name):
  def step(carry, inp):
    m, total, best = carry
    k, local_blk = inp
    _, _, logits, index = _chunk(rows, local_blk, scale, k, b, name)
    chunk_max = logits.max(axis=-1)
    new_m = jnp.maximum(m, chunk_max)
    total = total * jnp.exp(m - new_m) + jnp.exp(logits - new_m[:, None]).sum(axis=-1)
    best = jnp.where(chunk_max > m, index[jnp.argmax(logits, axis=-1)], best)
    return (new_m, total, best), None

  init = (jnp.full_like(rows[:, 0], -jnp.inf), jnp.zeros_like(rows[:, 0]),
          jnp.zeros_like(rows[:, 0], dtype=jnp.int32))
  (m, total, best), _ = jax.lax.scan(step, init, (jnp.arange(blocks.shape[0]), blocks))
  return m + jnp.log(total), best


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def gathered_logsumexp(rows: jnp.ndarray, cols: jnp.ndarray, scale: jnp.ndarray, name,
                       chunk: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Inside shard_map over axes `name`: per local row, logsumexp_j(scale * rows . col_j) over the
  columns `cols` [b, d] of all devices, and the global index of the row's largest logit (int32).
  The columns are gathered about `chunk` at a time; nothing of size B x d or b x B is formed."""
  n, s = _steps(cols.shape[0], jax.lax.axis_size(name), chunk)
  return _lse_forward(rows, _local_blocks(cols, n, s), scale, cols.shape[0], name)


def _lse_fwd(rows, cols, scale, name, chunk):
  lse, best = gathered_logsumexp(rows, cols, scale, name, chunk)
  return (lse, best), (rows, cols, scale, lse)


def _lse_bwd(name, chunk, res, cotangents):
  rows, cols, scale, lse = res
  g = cotangents[0]  # the argmax output has no gradient
  b = cols.shape[0]
  n, s = _steps(b, jax.lax.axis_size(name), chunk)

  def step(carry, inp):
    d_rows, d_scale = carry
    k, local_blk = inp
    blk, raw, logits, _ = _chunk(rows, local_blk, scale, k, b, name)
    p = jnp.exp(logits - lse[:, None]) * g[:, None]  # softmax probabilities x cotangent
    d_rows = d_rows + scale * (p @ blk)
    d_scale = d_scale + jnp.sum(p * raw)
    # This device's gradient for the chunk's columns, summed onto the devices that own them.
    d_local = jax.lax.psum_scatter(scale * (p.T @ rows), name, scatter_dimension=0, tiled=True)
    return (d_rows, d_scale), d_local

  init = (jnp.zeros_like(rows), jnp.zeros_like(scale))
  (d_rows, d_scale), d_blocks = jax.lax.scan(
      step, init, (jnp.arange(n), _local_blocks(cols, n, s)))
  return d_rows, d_blocks.reshape(n * s, -1)[:b], d_scale


gathered_logsumexp.defvjp(_lse_fwd, _lse_bwd)


def _direction(rows, rows_partner, cols, scale, positives, name, chunk, smoothing):
  """Per-row smoothed cross-entropy of local `rows` against the columns of all devices, and
  whether each row's largest logit is its positive."""
  lse, best = gathered_logsumexp(rows, cols, scale, name, chunk)
  pos = scale * jnp.sum(rows * rows_partner, axis=-1)  # the local pair is the positive
  ce = lse - pos
  if smoothing:
    big_b = cols.shape[0] * jax.lax.axis_size(name)
    col_mean = jax.lax.psum(cols.sum(axis=0), name) / big_b
    ce = lse - (1.0 - smoothing) * pos - smoothing * scale * (rows @ col_mean)
  return ce, best == positives


def local_softmax_contrastive(x, y, scale, *, axis_name, chunk: int,
                              label_smoothing: float = 0.0,
                              reduction: str = 'sum') -> dict[str, jnp.ndarray]:
  """Body run on each device inside shard_map; returns replicated scalar losses."""
  x, y, scale = manual.as_varying(
      (x.astype(jnp.float32), y.astype(jnp.float32), jnp.asarray(scale, jnp.float32)), axis_name)
  b = x.shape[0]
  positives = sharded.positives(b, axis_name)
  ce_i2t, hit_i2t = _direction(x, y, y, scale, positives, axis_name, chunk, label_smoothing)
  ce_t2i, hit_t2i = _direction(y, x, x, scale, positives, axis_name, chunk, label_smoothing)
  mean = lambda v: sharded.global_mean(v.sum(), b, axis_name)
  i2t, t2i, acc_i2t, acc_t2i = mean(ce_i2t), mean(ce_t2i), mean(hit_i2t), mean(hit_t2i)
  total = i2t + t2i if reduction == 'sum' else 0.5 * (i2t + t2i)
  return {'loss': total, 'loss/i2t': i2t, 'loss/t2i': t2i,
          'accuracy/i2t': acc_i2t, 'accuracy/t2i': acc_t2i}


def softmax_contrastive(x: jnp.ndarray, y: jnp.ndarray, scale: jnp.ndarray, mesh: Mesh, *,
                        batch_axes: Sequence[str] = ('data',), label_smoothing: float = 0.0,
                        reduction: str = 'sum', chunk: int = 1024) -> dict[str, jnp.ndarray]:
  """Symmetric contrastive loss of normalised embeddings x, y [B, d] sharded on batch_axes,
  holding at most b x chunk logits per device; equal to contrastive.softmax_contrastive."""
  if reduction not in ('sum', 'mean'):
    raise ValueError(f'loss.reduction must be "sum" or "mean", got {reduction!r}')
  if not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f'loss.chunk must be a positive int, got {chunk!r}')
  return sharded.run(local_softmax_contrastive, mesh, batch_axes, (x, y, scale),
                     (sharded.BATCH, sharded.BATCH, sharded.REPLICATED), chunk=chunk,
                     label_smoothing=label_smoothing, reduction=reduction)
