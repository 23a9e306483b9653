"""Sigmoid (SigLIP) loss over the global batch, computed shard by shard.

L = -1/B sum_ij log sigmoid(z_ij (s x_i . y_j + bias)), z = +1 for the pair (i, i), -1 otherwise.
Every (image, text) pair is an independent binary term, so the B x B sum splits into blocks.

impl 'ring': each device keeps its b images and passes text blocks around the device ring with
jax.lax.ppermute; after D steps every device has scored its images against every text block and
holds only b x b logits at a time. The backward pass (a jax.custom_vjp) goes round the ring again,
recomputing each block's logits; each text block travels with its gradient accumulator, which
arrives home complete after the D-th hop. Nothing of size B is ever held.
impl 'gather': each device all-gathers the B texts and forms its b x B logits (autodiff); simple,
and the cross-check for the ring.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from vlalign.losses import manual, sharded

IMPLS = ('ring', 'gather')


def _signs(step, b):
  """z for the block a device scores at ring step `step`: its own texts (step 0) hold the
  positives on the diagonal; every other block is all negatives."""
  return jnp.where((step == 0) & jnp.eye(b, dtype=bool), 1.0, -1.0)


def _ring_perm(size: int) -> list[tuple[int, int]]:
  return [(i, (i + 1) % size) for i in range(size)]


def _ring_forward(x, y, scale, bias, name):
  size, r, b = jax.lax.axis_size(name), jax.lax.axis_index(name), x.shape[0]

  def step(carry, k):
    y_blk, col_max, col_best, loss, row_max, row_best = carry
    logits = scale * (x @ y_blk.T) + bias
    loss = loss - jnp.sum(jax.nn.log_sigmoid(_signs(k, b) * logits))
    # Best text per local image (rows), and best local image per travelling text (columns); the
    # column record travels with its texts and is complete when they are home again.
    best, top = logits.max(axis=1), ((r - k) % size) * b + jnp.argmax(logits, axis=1)
    row_best, row_max = jnp.where(best > row_max, top, row_best), jnp.maximum(best, row_max)
    best, top = logits.max(axis=0), r * b + jnp.argmax(logits, axis=0)
    col_best, col_max = jnp.where(best > col_max, top, col_best), jnp.maximum(best, col_max)
    y_blk, col_max, col_best = jax.lax.ppermute((y_blk, col_max, col_best), name,
                                                _ring_perm(size))
    return (y_blk, col_max, col_best, loss, row_max, row_best), None

  low = jnp.full_like(x[:, 0], -jnp.inf)
  none = jnp.zeros_like(x[:, 0], dtype=jnp.int32)
  init = (y, low, none, jnp.zeros_like(scale), low, none)
  (_, _, col_best, loss, _, row_best), _ = jax.lax.scan(step, init, jnp.arange(size))
  return loss, row_best, col_best


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def ring_sigmoid(x: jnp.ndarray, y: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray,
                 name) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Inside shard_map over axes `name`: this device's share of the summed (unnormalised) sigmoid
  loss, and the global index of the best-scoring text per local image and image per local text."""
  return _ring_forward(x, y, scale, bias, name)


def _ring_fwd(x, y, scale, bias, name):
  return _ring_forward(x, y, scale, bias, name), (x, y, scale, bias)


def _ring_bwd(name, res, cotangents):
  x, y, scale, bias = res
  g = cotangents[0]  # the argmax outputs have no gradient
  size, b = jax.lax.axis_size(name), x.shape[0]

  def step(carry, k):
    d_x, y_blk, d_blk, d_scale, d_bias = carry
    raw = x @ y_blk.T
    z = _signs(k, b)
    d_logits = -z * jax.nn.sigmoid(-z * (scale * raw + bias)) * g  # d/dl of -log sigmoid(z l)
    d_x = d_x + scale * (d_logits @ y_blk)
    d_blk = d_blk + scale * (d_logits.T @ x)
    d_scale, d_bias = d_scale + jnp.sum(d_logits * raw), d_bias + jnp.sum(d_logits)
    y_blk, d_blk = jax.lax.ppermute((y_blk, d_blk), name, _ring_perm(size))
    return (d_x, y_blk, d_blk, d_scale, d_bias), None

  init = (jnp.zeros_like(x), y, jnp.zeros_like(y), jnp.zeros_like(scale), jnp.zeros_like(bias))
  (d_x, _, d_y, d_scale, d_bias), _ = jax.lax.scan(step, init, jnp.arange(size))
  return d_x, d_y, d_scale, d_bias


ring_sigmoid.defvjp(_ring_fwd, _ring_bwd)


def _gather_sigmoid(x, y, scale, bias, name):
  """Same outputs as ring_sigmoid from local rows x all-gathered columns (b x B logits)."""
  b = x.shape[0]
  positives = sharded.positives(b, name)
  logits = scale * (x @ jax.lax.all_gather(y, name, tiled=True).T) + bias
  z = jnp.where(jnp.arange(logits.shape[1]) == positives[:, None], 1.0, -1.0)
  loss = -jnp.sum(jax.nn.log_sigmoid(z * logits))
  x_all = jax.lax.all_gather(jax.lax.stop_gradient(x), name, tiled=True)
  t2i = jax.lax.stop_gradient(y) @ x_all.T  # only for the accuracy
  return loss, jnp.argmax(logits, axis=1), jnp.argmax(t2i, axis=1)


def local_sigmoid_loss(x, y, scale, bias, *, axis_name, impl: str = 'ring'
                       ) -> dict[str, jnp.ndarray]:
  """Body run on each device inside shard_map; returns replicated scalars."""
  x, y, scale, bias = manual.as_varying(
      tuple(jnp.asarray(a, jnp.float32) for a in (x, y, scale, bias)), axis_name)
  b = x.shape[0]
  fn = ring_sigmoid if impl == 'ring' else _gather_sigmoid
  loss, best_i2t, best_t2i = fn(x, y, scale, bias, axis_name)
  positives = sharded.positives(b, axis_name)
  mean = lambda v: sharded.global_mean(v, b, axis_name)
  return {'loss': mean(loss), 'accuracy/i2t': mean(jnp.sum(best_i2t == positives)),
          'accuracy/t2i': mean(jnp.sum(best_t2i == positives))}


def sigmoid_loss(x: jnp.ndarray, y: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray,
                 mesh: Mesh, *, batch_axes: Sequence[str] = ('data',),
                 impl: str = 'ring') -> dict[str, jnp.ndarray]:
  """SigLIP loss of normalised embeddings x, y [B, d] sharded on batch_axes, with logit scale s
  and bias; {'loss', 'accuracy/i2t', 'accuracy/t2i'} as replicated scalars."""
  if impl not in IMPLS:
    raise ValueError(f'sigmoid loss impl must be one of {IMPLS}, got {impl!r}')
  return sharded.run(local_sigmoid_loss, mesh, batch_axes, (x, y, scale, bias),
                     (sharded.BATCH, sharded.BATCH, sharded.REPLICATED, sharded.REPLICATED),
                     impl=impl)
