"""Optimizers and learning-rate schedules from optax, built from `config.optimizer`."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

# Parameters matching this are kept out of weight decay: biases, norms, embeddings of
# position/class, and the temperature.
NO_DECAY = re.compile(r'(bias|scale|log_scale|LayerNorm|ln\w*|norm|pos_embed|cls)$|/ln\w*/|'
                      r'BatchNorm|/bn\w*/')


def schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to lr, then cosine / linear decay to lr * end_lr_factor, or constant."""
  end = opt.lr * opt.end_lr_factor
  decay_steps = max(total_steps - opt.warmup_steps, 1)
  if opt.decay == 'cosine':
    after = optax.cosine_decay_schedule(opt.lr, decay_steps, alpha=opt.end_lr_factor)
  elif opt.decay == 'linear':
    after = optax.linear_schedule(opt.lr, end, decay_steps)
  else:
    after = optax.constant_schedule(opt.lr)
  if not opt.warmup_steps:
    return after
  warm = optax.linear_schedule(0.0, opt.lr, opt.warmup_steps)
  return optax.join_schedules([warm, after], [opt.warmup_steps])


def decay_mask(params):
  """True for parameters that get weight decay (matrices and kernels)."""
  def one(path, leaf):
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    return leaf.ndim > 1 and not NO_DECAY.search(name)
  return jax.tree_util.tree_map_with_path(one, params)


def frozen_towers(model_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Top-level parameter names of the towers locked by model.<tower>.trainable=False."""
  return tuple(f'{t}_tower' for t in ('image', 'text') if not model_cfg[t].get('trainable', True))


def project_log_scale(lo: float, hi: float) -> optax.GradientTransformation:
  """Last in the chain: the update of the top-level 'log_scale' parameter becomes
  clip(p + u, lo, hi) - p, so after every step lo <= log_scale <= hi (DeCLIP's and ALBEF's
  in-place clamp of the parameter; its gradient and the optimizer's moments are untouched)."""
  def update(updates, state, params):
    if params is None:
      raise ValueError('optimizer.log_scale_range: the projection needs the parameters')
    def one(path, u, p):
      if len(path) == 1 and getattr(path[0], 'key', None) == 'log_scale':
        return jnp.clip(p + u, lo, hi) - p
      return u
    return jax.tree_util.tree_map_with_path(one, updates, params), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int,
                   frozen: tuple[str, ...] = ()) -> tuple[optax.GradientTransformation,
                                                          optax.Schedule]:
  """(gradient transformation with clipping, its lr schedule). Parameters under the top-level
  names in `frozen` (locked towers) get zero updates and no optimizer state (their gradients
  are left out of the clipping norm too)."""
  lr = schedule(opt, total_steps)
  if opt.name == 'adamw':
    tx = optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                     mask=decay_mask)
  elif opt.name == 'lamb':
    tx = optax.lamb(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                    mask=decay_mask)
  else:
    raise ValueError(f'config.optimizer.name: unknown optimizer {opt.name!r}')
  if opt.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
  if frozen:
    labels = lambda params: {k: jax.tree.map(lambda _: 'frozen' if k in frozen else 'train', v)
                             for k, v in params.items()}
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
  if opt.log_scale_range:
    tx = optax.chain(tx, project_log_scale(*opt.log_scale_range))
  return tx, lr
