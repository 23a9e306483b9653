"""ZeroVL's decoupled gradient accumulation (Cui et al. 2022; METHODS.md section 2): the
contrastive gradient of a global batch of K micro-batches with the memory of one micro-batch,
equal to the full-batch gradient.

The loss couples every pair in the batch, so plain accumulation (a loss per micro-batch) would
change the objective. The two-pass scheme keeps it:
  1. embed every micro-batch without keeping activations (a forward pass per micro-batch);
  2. evaluate the loss on the whole batch's embeddings and take its gradient with respect to
     the embeddings (and the logit scale / bias): g_X, g_Y, g_s;
  3. embed each micro-batch again, with the same randomness, and back-propagate its rows of
     g_X, g_Y (and g_s / K, since every micro-batch recomputes the same scale) into the
     parameters, summing over micro-batches.
By the chain rule the sum is the full-batch parameter gradient; activation memory is one
micro-batch's. The cost is one extra forward pass per step (about a third more compute).

Micro-batch k takes the k-th contiguous block of every device's rows, so each micro-batch is
sharded over the devices like the batch and no rows move between devices.

config.grad_accum.micro_batches = K (1: off). Works with the contrastive losses of config.loss
(softmax or sigmoid, gather or blockwise) on towers without batch norm (batch statistics of a
micro-batch are not those of the batch).
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vlalign.losses import api as losses_api


def batch_shards(mesh: Mesh, batch_axes) -> int:
  """How many shards the batch dimension is split into."""
  return math.prod(mesh.shape[a] for a in batch_axes)


def split_micro(x: jnp.ndarray, k: int, shards: int, mesh: Mesh, batch_axes) -> jnp.ndarray:
  """[B, ...] -> [k, B/k, ...]: micro-batch j holds the j-th block of every shard's rows."""
  b = x.shape[0] // shards
  y = x.reshape((shards, k, b // k) + x.shape[1:])
  y = jnp.swapaxes(y, 0, 1).reshape((k, x.shape[0] // k) + x.shape[1:])
  return jax.lax.with_sharding_constraint(y, NamedSharding(mesh, P(None, tuple(batch_axes))))


def merge_micro(y: jnp.ndarray, shards: int, mesh: Mesh, batch_axes) -> jnp.ndarray:
  """Inverse of split_micro: [k, B/k, ...] -> [B, ...] in the batch's row order."""
  k, n = y.shape[:2]
  z = y.reshape((k, shards, n // shards) + y.shape[2:])
  z = jnp.swapaxes(z, 0, 1).reshape((k * n,) + y.shape[2:])
  return jax.lax.with_sharding_constraint(z, NamedSharding(mesh, P(tuple(batch_axes))))


def make_value_and_grad(config, model, mesh: Mesh) -> Callable:
  """(params, model_state, extra, batch, rng) -> ((loss, (losses, logit_params, model_state,
  extra)), grads), like jax.value_and_grad of the plain objective, computed in
  config.grad_accum.micro_batches micro-batches with the two-pass scheme."""
  k = config.grad_accum.micro_batches
  axes = tuple(config.batch_axes)
  shards = batch_shards(mesh, axes)
  has_bias = config.model.bias_init is not None

  def embed(params, model_state, images, tokens, rng):
    out = model.apply({'params': params, **model_state}, images, tokens, train=True,
                      rngs={'dropout': rng})
    return (out['image'], out['text'], out['scale'],
            out['bias'] if has_bias else jnp.zeros((), jnp.float32))

  def loss_of(x, y, scale, bias):
    out = {'image': x, 'text': y, 'scale': scale}
    if has_bias:
      out['bias'] = bias
    losses = losses_api.compute(config.loss, out, mesh, axes)
    return losses['loss'], losses

  def value_and_grad(params, model_state, extra, batch, rng) -> tuple[tuple[Any, Any], Any]:
    if jax.tree.leaves(model_state):
      raise ValueError('config.grad_accum.micro_batches > 1 needs towers without batch norm: '
                       'a micro-batch\'s statistics are not the batch\'s')
    micro = {name: split_micro(batch[name], k, shards, mesh, axes)
             for name in ('image', 'tokens')}
    keys = jax.vmap(lambda j: jax.random.fold_in(rng, j))(jnp.arange(k))

    def forward(_, inp):
      key, mb = inp
      x, y, scale, bias = embed(params, model_state, mb['image'], mb['tokens'], key)
      return None, (x, y, scale, bias)

    _, (xs, ys, scales, biases) = jax.lax.scan(forward, None, (keys, micro))
    x, y = merge_micro(xs, shards, mesh, axes), merge_micro(ys, shards, mesh, axes)
    scale, bias = scales[0], biases[0]
    (loss, losses), (gx, gy, gs, gb) = jax.value_and_grad(
        loss_of, argnums=(0, 1, 2, 3), has_aux=True)(x, y, scale, bias)
    gxs = split_micro(gx, k, shards, mesh, axes)
    gys = split_micro(gy, k, shards, mesh, axes)

    def backward(acc, inp):
      key, mb, gxk, gyk = inp
      _, vjp = jax.vjp(lambda p: embed(p, model_state, mb['image'], mb['tokens'], key), params)
      (grads,) = vjp((gxk, gyk, gs / k, gb / k))
      return jax.tree.map(jnp.add, acc, grads), None

    grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params),
                            (keys, micro, gxs, gys))
    logit_params = {'scale': scale}
    if has_bias:
      logit_params['bias'] = bias
    return (loss, (losses, logit_params, model_state, extra)), grads

  return value_and_grad
