"""Softmax contrastive loss over the global batch, computed shard by shard.

Each device holds b local rows of each modality. It all-gathers the other modality's
B = D * b columns and multiplies its local rows by them, so its logits are b x B; the
positive of local row i on device r is global column r * b + i. The B x B matrix never
exists on one device. Gradients flow through the gather by autodiff (its transpose is a
reduce-scatter).

`column_grad` chooses which columns carry gradient: 'all' (the default, the exact gradient of
the global loss), 'local' (only this device's own columns; the others are a gradient-free
gather, as CLIP-style code that swaps its local slice back into a no_grad gather) or 'none'
(every column is a constant, as ViCHA's and ALBEF's torch.no_grad concat_all_gather, even on
one GPU: only the rows carry gradient).
"""

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from vlalign.losses import sharded


def _smoothed_ce(logits: jnp.ndarray, positives: jnp.ndarray, smoothing: float) -> jnp.ndarray:
  """Per-row cross-entropy against (1 - eps) one-hot + eps / B targets."""
  lse = jax.nn.logsumexp(logits, axis=-1)
  pos = jnp.take_along_axis(logits, positives[:, None], axis=-1)[:, 0]
  ce = lse - pos
  if smoothing:
    ce = lse - (1.0 - smoothing) * pos - smoothing * logits.mean(axis=-1)
  return ce


COLUMN_GRADS = ('all', 'local', 'none')


def _gather_columns(v: jnp.ndarray, axis_name, column_grad: str) -> jnp.ndarray:
  """All rows of v over the axis, with gradient as `column_grad` says."""
  if column_grad == 'all':
    return sharded.gather(v, axis_name)
  out = sharded.gather(jax.lax.stop_gradient(v), axis_name)
  if column_grad == 'none':
    return out
  start = jax.lax.axis_index(axis_name) * v.shape[0]
  return jax.lax.dynamic_update_slice_in_dim(out, v, start, axis=0)


def local_softmax_contrastive(x: jnp.ndarray, y: jnp.ndarray, scale: jnp.ndarray, *,
                              axis_name, label_smoothing: float = 0.0,
                              reduction: str = 'sum',
                              column_grad: str = 'all') -> dict[str, jnp.ndarray]:
  """Body run on each device inside shard_map; returns replicated scalar losses."""
  b = x.shape[0]
  x_all = _gather_columns(x, axis_name, column_grad)
  y_all = _gather_columns(y, axis_name, column_grad)
  positives = sharded.positives(b, axis_name)
  x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
  logits_i2t = scale * x32 @ y_all.astype(jnp.float32).T
  logits_t2i = scale * y32 @ x_all.astype(jnp.float32).T
  ce_i2t = _smoothed_ce(logits_i2t, positives, label_smoothing)
  ce_t2i = _smoothed_ce(logits_t2i, positives, label_smoothing)
  mean = lambda v: sharded.global_mean(v.sum(), b, axis_name)
  i2t, t2i = mean(ce_i2t), mean(ce_t2i)
  acc_i2t = mean(logits_i2t.argmax(-1) == positives)
  acc_t2i = mean(logits_t2i.argmax(-1) == positives)
  total = i2t + t2i if reduction == 'sum' else 0.5 * (i2t + t2i)
  return {'loss': total, 'loss/i2t': i2t, 'loss/t2i': t2i,
          'accuracy/i2t': acc_i2t, 'accuracy/t2i': acc_t2i}


def softmax_contrastive(x: jnp.ndarray, y: jnp.ndarray, scale: jnp.ndarray, mesh: Mesh, *,
                        batch_axes: Sequence[str] = ('data',), label_smoothing: float = 0.0,
                        reduction: str = 'sum',
                        column_grad: str = 'all') -> dict[str, jnp.ndarray]:
  """Symmetric contrastive loss of normalised embeddings x, y [B, d] sharded on batch_axes."""
  if reduction not in ('sum', 'mean'):
    raise ValueError(f'loss.reduction must be "sum" or "mean", got {reduction!r}')
  if column_grad not in COLUMN_GRADS:
    raise ValueError(f'column_grad must be one of {COLUMN_GRADS}, got {column_grad!r}')
  return sharded.run(local_softmax_contrastive, mesh, batch_axes, (x, y, scale),
                     (sharded.BATCH, sharded.BATCH, sharded.REPLICATED),
                     label_smoothing=label_smoothing, reduction=reduction,
                     column_grad=column_grad)
