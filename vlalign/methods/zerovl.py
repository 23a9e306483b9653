"""ZeroVL (Cui et al. 2022; docs/METHODS.md section 2): coin-flipping mixup and decoupled gradient
accumulation, for the contrastive objective of config.loss (debiased sampling is the data
layer's `data.mixing: debiased`).

Coin-flipping mixup (config.mixup.enabled, beta): per step lambda ~ Beta(beta, beta) and a fair
coin from the step's key; heads mixes each image with its partner pi(i) (the reverse order
within each micro-batch's rows on each device, as ZeroVL's accumulation runner mixes every
micro-batch with its own flip; without accumulation, or with mixup.partner='device', within
each device's rows) in pixel space, tails mixes the projected text embeddings before
normalisation; either way the loss is lambda L(x, y) + (1 - lambda) L(x, y_pi): the soft target
lambda at the own column and 1 - lambda at the partner's global column, in both directions (the
cross-entropy is linear in its target, and L(x, y_pi)'s text-to-image rows are the partners').

Decoupled gradient accumulation: the contrastive gradient of a global batch of K micro-batches
with the memory of one micro-batch, equal to the full-batch gradient.

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

config.grad_accum.micro_batches = K (1: off). Works with mixup and the contrastive losses of
config.loss (softmax or sigmoid, gather or blockwise) on towers without batch norm (batch
statistics of a micro-batch are not those of the batch).
"""

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vlalign.losses import api as losses_api
from vlalign.models import two_tower


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


MIXUP_SALT = 0x5A17


def mixup_draw(rng: jnp.ndarray, beta: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(lambda ~ Beta(beta, beta), heads ~ fair coin) of a step, from the step's key."""
  k_lam, k_coin = jax.random.split(jax.random.fold_in(rng, MIXUP_SALT))
  return jax.random.beta(k_lam, beta, beta), jax.random.bernoulli(k_coin, 0.5)


def flip_within_shards(x: jnp.ndarray, shards: int, mesh: Mesh, batch_axes) -> jnp.ndarray:
  """Rows in reverse order within each of `shards` contiguous blocks (ZeroVL's partner
  pi(i) = b - 1 - i within a block)."""
  y = x.reshape((shards, x.shape[0] // shards) + x.shape[1:])[:, ::-1]
  return jax.lax.with_sharding_constraint(y.reshape(x.shape),
                                          NamedSharding(mesh, P(tuple(batch_axes))))


class Parts:
  """The objective split where ZeroVL needs it: per-example embedding (towers, projections;
  images mixed before it) and the whole-batch head (text mixup between projection and
  normalisation, then the loss with mixup's soft targets)."""

  def __init__(self, config, model, mesh: Mesh):
    self.config, self.model, self.mesh = config, model, mesh
    self.axes = tuple(config.batch_axes)
    self.shards = batch_shards(mesh, self.axes)
    self.has_bias = config.model.bias_init is not None
    self.mixup = config.mixup.enabled
    # Mixup partners are mirrored within blocks: each device's micro-batch (ZeroVL) or rows.
    per_device = config.grad_accum.micro_batches if config.mixup.partner == 'micro_batch' else 1
    self.blocks = self.shards * per_device

  def draw(self, rng):
    if not self.mixup:
      return jnp.float32(1.0), jnp.bool_(True)
    return mixup_draw(rng, self.config.mixup.beta)

  def flip(self, x):
    return flip_within_shards(x, self.blocks, self.mesh, self.axes)

  def mix_images(self, images, lam, heads):
    """Heads: pixel-space mixup with the partner; tails: the images as they are."""
    if not self.mixup:
      return images
    mixed = lam * images + (1.0 - lam) * self.flip(images)
    return jnp.where(heads, mixed, images)

  def embed(self, params, model_state, images, tokens, rng, mutable: bool = False):
    """(normalised image embeddings, projected text before normalisation, scale, bias[,
    new model_state])."""
    variables = {'params': params, **model_state}
    kwargs = dict(train=True, rngs={'dropout': rng}, method='embed_parts')
    if mutable:
      out, model_state = self.model.apply(variables, images, tokens,
                                          mutable=list(model_state), **kwargs)
    else:
      out = self.model.apply(variables, images, tokens, **kwargs)
    bias = out['bias'] if self.has_bias else jnp.zeros((), jnp.float32)
    parts = (out['image'], out['text_projected'], out['scale'], bias)
    return parts + (model_state,) if mutable else parts

  def head(self, x, t, scale, bias, lam, heads):
    """(loss, losses): tails mixes the projected texts; both coin sides train with soft targets
    lambda at the own column and 1 - lambda at the partner's (lambda = 1: the plain loss)."""
    if self.mixup:
      t = jnp.where(heads, t, lam * t + (1.0 - lam) * self.flip(t))
    y = two_tower.l2_normalize(t)
    out = {'image': x, 'text': y, 'scale': scale}
    if self.has_bias:
      out['bias'] = bias
    losses = losses_api.compute(self.config.loss, out, self.mesh, self.axes)
    if self.mixup:
      partner = losses_api.compute(self.config.loss, {**out, 'text': self.flip(y)}, self.mesh,
                                   self.axes)
      losses = {k: (lam * v + (1.0 - lam) * partner[k] if k.startswith('loss') else v)
                for k, v in losses.items()}
      losses['mixup/lambda'] = jnp.asarray(lam, jnp.float32)
      losses['mixup/heads'] = jnp.asarray(heads, jnp.float32)
    return losses['loss'], losses

  def logit_params(self, scale, bias):
    return {'scale': scale, 'bias': bias} if self.has_bias else {'scale': scale}


def make_objective(config, model, mesh: Mesh) -> Callable:
  """The plain (one-pass) objective with coin-flipping mixup: (params, model_state, extra,
  batch, rng) -> (loss, (losses, logit params, model_state, extra))."""
  parts = Parts(config, model, mesh)

  def objective(params, model_state, extra, batch, rng):
    lam, heads = parts.draw(rng)
    images = parts.mix_images(batch['image'], lam, heads)
    x, t, scale, bias, model_state = parts.embed(params, model_state, images, batch['tokens'],
                                                 rng, mutable=True)
    loss, losses = parts.head(x, t, scale, bias, lam, heads)
    return loss, (losses, parts.logit_params(scale, bias), model_state, extra)

  return objective


def sequential(body: Callable, carry: Any, xs: Any, k: int, unrolled: bool) -> tuple[Any, Any]:
  """lax.scan(body, carry, xs) over the k micro-batches, a loop (default), or fully unrolled
  into straight-line code (config.grad_accum.unroll).

  Why both: XLA:CPU runs a while loop's body far slower than the same ops outside a loop (the
  ZeroVL small step at batch 256 on this machine: 4.7 s/step with the loop, 1.15 s unrolled,
  1.01 s for K = 1), but unrolled, XLA:CPU's schedule overlaps the micro-batches and keeps most
  of the memory saving from happening (temporaries 422 MB unrolled vs 204 MB looped and 470 MB
  for K = 1; docs/BENCHMARKS.md). The loop is the memory-saving form everywhere and the default;
  unroll is a speed option for CPU runs."""
  return jax.lax.scan(body, carry, xs, unroll=k if unrolled else 1)


def make_value_and_grad(config, model, mesh: Mesh) -> Callable:
  """(params, model_state, extra, batch, rng) -> ((loss, (losses, logit_params, model_state,
  extra)), grads), like jax.value_and_grad of make_objective's objective, computed in
  config.grad_accum.micro_batches micro-batches with the two-pass scheme (mixup included:
  images are mixed before the split, texts in the whole-batch head)."""
  k = config.grad_accum.micro_batches
  unrolled = bool(config.grad_accum.unroll)
  parts = Parts(config, model, mesh)
  axes, shards = parts.axes, parts.shards

  def value_and_grad(params, model_state, extra, batch, rng) -> tuple[tuple[Any, Any], Any]:
    if jax.tree.leaves(model_state):
      raise ValueError('config.grad_accum.micro_batches > 1 needs towers without batch norm: '
                       'a micro-batch\'s statistics are not the batch\'s')
    lam, heads = parts.draw(rng)
    images = parts.mix_images(batch['image'], lam, heads)
    micro = {'image': split_micro(images, k, shards, mesh, axes),
             'tokens': split_micro(batch['tokens'], k, shards, mesh, axes)}
    keys = jax.vmap(lambda j: jax.random.fold_in(rng, j))(jnp.arange(k))

    def forward(_, inp):
      key, mb = inp
      return None, parts.embed(params, model_state, mb['image'], mb['tokens'], key)

    _, (xs, ts, scales, biases) = sequential(forward, None, (keys, micro), k, unrolled)
    x, t = merge_micro(xs, shards, mesh, axes), merge_micro(ts, shards, mesh, axes)
    scale, bias = scales[0], biases[0]
    (loss, losses), (gx, gt, gs, gb) = jax.value_and_grad(
        lambda *a: parts.head(*a, lam, heads), argnums=(0, 1, 2, 3), has_aux=True)(
            x, t, scale, bias)
    gxs = split_micro(gx, k, shards, mesh, axes)
    gts = split_micro(gt, k, shards, mesh, axes)

    def backward(acc, inp):
      key, mb, gxk, gtk = inp
      _, vjp = jax.vjp(lambda p: parts.embed(p, model_state, mb['image'], mb['tokens'], key),
                       params)
      (grads,) = vjp((gxk, gtk, gs / k, gb / k))
      return jax.tree.map(jnp.add, acc, grads), None

    grads, _ = sequential(backward, jax.tree.map(jnp.zeros_like, params),
                          (keys, micro, gxs, gts), k, unrolled)
    return (loss, (losses, parts.logit_params(scale, bias), model_state, extra)), grads

  return value_and_grad
