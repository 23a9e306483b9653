"""BriVL / WenLan (Huo et al. 2021; docs/METHODS.md section 4): cross-modal MoCo.

Query encoders are the model's towers (trained); the momentum encoders are an EMA copy of the
same parameters (m = method.brivl.momentum, no gradient) held in `TrainState.extra['ema']`. Two
FIFO queues (methods/bank.py, global and sharded over the batch axes) hold momentum keys: Q_I of
images, Q_T of texts. With fixed temperature tau and s = 1 / tau:

  L_i2t = -1/B sum_i log( e^{s q^I_i.k^T_i} / (e^{s q^I_i.k^T_i} + sum_{k in Q_T} e^{s q^I_i.k}) )

and L_t2i the same with the modalities swapped (Q_I); L = L_i2t + L_t2i. The positive is the
other modality's momentum key of the same pair; the negatives are the queue only (no in-batch
negatives). Per step, in this order: EMA update of the momentum parameters from the current ones
(as MoCo does before computing keys), keys from the momentum encoders (train mode, so batch
statistics and dropout as in the query pass; their batch-norm statistics live in
extra['ema']['model_state']), the loss against the queues as they were before this step, then
both queues take this step's keys (all-gathered, global batch order), oldest out.

Not reproduced: MoCo's shuffled batch norm for the key encoders; here batch norm (in towers that
have it) normalises over the global batch in both encoders.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from vlalign import config_lib
from vlalign.losses import sharded
from vlalign.methods import bank, ema


def init(config, model, params, model_state, key) -> tuple[Any, dict]:
  """No heads; extra = momentum copies of params and model state, and the two key queues."""
  del model
  k_img, k_txt = jax.random.split(key)
  size, dim = config.method.brivl.queue_size, config.model.embed_dim
  extra = {'ema': {'params': jax.tree.map(jnp.copy, params),
                   'model_state': jax.tree.map(jnp.copy, model_state)},
           'queue_image': bank.init(k_img, size, dim), 'queue_text': bank.init(k_txt, size, dim)}
  return params, extra

LOSS_FIELDS = ()  # its queue loss has a fixed temperature and no config.loss options


def defaults() -> ml_collections.ConfigDict:
  """config.method.brivl: EMA factor of the momentum encoders, entries per key queue (a
  multiple of the global batch), the fixed temperature tau."""
  return ml_collections.ConfigDict({'momentum': 0.99, 'queue_size': 9600, 'temperature': 0.07})


def validate(config) -> None:
  """Momentum below 1, queues a multiple of the global batch, a positive temperature."""
  me, check = config.method.brivl, config_lib.check
  check(0 <= me.momentum < 1, 'method.brivl.momentum', f'must be in [0, 1), got {me.momentum!r}')
  config_lib.check_queue(me.queue_size, 'method.brivl.queue_size', config.data.global_batch)
  check(isinstance(me.temperature, (int, float)) and me.temperature > 0,
        'method.brivl.temperature', f'must be positive, got {me.temperature!r}')


def extra_shardings(config, state_shardings, mesh: Mesh) -> dict:
  """Momentum parameters placed like the parameters; queues split over the batch axes."""
  queue = bank.shardings(mesh, config.batch_axes)
  return {'ema': {'params': state_shardings.params, 'model_state': state_shardings.model_state},
          'queue_image': queue, 'queue_text': dict(queue)}


def _queue_body(q, k, queue, *, scale, axis_name):
  """Per device: local queries q and positive keys k [b, d], this device's queue rows [K/D, d]."""
  axis = axis_name
  b = q.shape[0]
  q_all = jax.lax.all_gather(q, axis, tiled=True)  # [B, d]: the queries go to the queue rows
  neg = scale * q_all @ queue.T  # [B, K/D]
  big_b = q_all.shape[0]
  me = jax.lax.axis_index(axis)
  # Row maxima over all queue rows (a shift for a stable log-sum-exp; no gradient needed).
  shift = jax.lax.stop_gradient(jnp.max(jax.lax.all_gather(neg.max(axis=1), axis), axis=0))
  total = jax.lax.psum(jnp.exp(neg - shift[:, None]).sum(axis=1), axis)  # [B]
  shift = jax.lax.dynamic_slice_in_dim(shift, me * b, b)
  total = jax.lax.dynamic_slice_in_dim(total, me * b, b)
  pos = scale * jnp.sum(q * k, axis=1)  # [b]
  top = jax.lax.stop_gradient(jnp.maximum(shift, pos))
  lse = top + jnp.log(jnp.exp(pos - top) + total * jnp.exp(shift - top))
  loss = jax.lax.psum(jnp.sum(lse - pos), axis) / big_b
  acc = jax.lax.psum(jnp.sum(pos > shift), axis) / big_b  # the positive beats every queue key
  return loss, acc


def queue_loss(q: jnp.ndarray, k: jnp.ndarray, queue: jnp.ndarray, scale: float, mesh: Mesh,
               batch_axes: Sequence[str] = ('data',)) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(loss, accuracy): InfoNCE of unit queries q [B, d] against their positive keys k [B, d]
  (no gradient into k) with the rows of `queue` [K, d] as the only negatives; q and k sharded on
  batch_axes, the queue on batch_axes too (it is never gathered: the queries are)."""
  batch, rep = sharded.BATCH, sharded.REPLICATED
  return sharded.run(_queue_body, mesh, batch_axes, (q, jax.lax.stop_gradient(k), queue),
                     (batch, batch, batch), out=(rep, rep), scale=scale)


def make_objective(config, model, mesh: Mesh):
  """The train step's loss function for BriVL (see the module docstring)."""
  me, axes = config.method.brivl, config.batch_axes
  scale = 1.0 / me.temperature

  def objective(params, model_state, extra, batch, rng):
    out, model_state = model.apply({'params': params, **model_state}, batch['image'],
                                   batch['tokens'], train=True, rngs={'dropout': rng},
                                   mutable=list(model_state))
    momentum = {'params': ema.update(extra['ema']['params'], params, me.momentum),
                'model_state': extra['ema']['model_state']}
    keys, momentum['model_state'] = model.apply(
        {'params': momentum['params'], **momentum['model_state']}, batch['image'],
        batch['tokens'], train=True, rngs={'dropout': jax.random.fold_in(rng, 1)},
        mutable=list(momentum['model_state']))
    k_img, k_txt = jax.lax.stop_gradient(keys['image']), jax.lax.stop_gradient(keys['text'])
    i2t, acc_i2t = queue_loss(out['image'], k_txt, extra['queue_text']['entries'], scale, mesh,
                              axes)
    t2i, acc_t2i = queue_loss(out['text'], k_img, extra['queue_image']['entries'], scale, mesh,
                              axes)
    extra = {'ema': momentum,
             'queue_image': bank.enqueue(extra['queue_image'], k_img, mesh, axes),
             'queue_text': bank.enqueue(extra['queue_text'], k_txt, mesh, axes)}
    losses = {'loss': i2t + t2i, 'loss/i2t': i2t, 'loss/t2i': t2i,
              'accuracy/i2t': acc_i2t, 'accuracy/t2i': acc_t2i}
    return losses['loss'], (losses, {'scale': jnp.float32(scale)}, model_state, extra)

  return objective
