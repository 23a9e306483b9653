"""Plain contrastive training (ALIGN / CLIP / SigLIP): the loss of config.loss on one image view
and its caption, and ZeroVL's two options of it (methods/zerovl.py), chosen here and nowhere
else:
  mixup.enabled              coin-flipping mixup replaces the one-pass objective;
  grad_accum.micro_batches   K > 1: decoupled two-pass accumulation replaces the step's
                             jax.value_and_grad (the full-batch gradient, one micro-batch's
                             activation memory).
"""

from typing import Callable, Optional

import ml_collections
from jax.sharding import Mesh

from vlalign import config_lib
from vlalign.losses import api as losses_api
from vlalign.methods import base, zerovl

# Image towers with batch norm: a micro-batch's statistics are not the batch's.
BATCH_NORM_TOWERS = ('efficientnet', 'clip_resnet')


def validate(config: ml_collections.ConfigDict) -> None:
  """Decoupled accumulation needs towers without batch norm."""
  image, micro = config.model.image.name, config.grad_accum.micro_batches
  config_lib.check(micro == 1 or image not in BATCH_NORM_TOWERS, 'grad_accum.micro_batches',
                   f'{micro} micro-batches need an image tower without batch norm (a '
                   f'micro-batch\'s statistics are not the batch\'s), got '
                   f'model.image.name={image!r}')


def plain_objective(config: ml_collections.ConfigDict, model, mesh: Mesh) -> base.Objective:
  """The contrastive loss of config.loss on the towers' outputs (one pass, no mixup)."""
  loss_cfg, axes = config.loss, config.batch_axes

  def objective(params, model_state, extra, batch, rng):
    out, model_state = model.apply({'params': params, **model_state}, batch['image'],
                                   batch['tokens'], train=True, rngs={'dropout': rng},
                                   mutable=list(model_state))
    losses = losses_api.compute(loss_cfg, out, mesh, axes)
    logit_params = {k: out[k] for k in ('scale', 'bias') if k in out}
    return losses['loss'], (losses, logit_params, model_state, extra)

  return objective


def make_objective(config: ml_collections.ConfigDict, model, mesh: Mesh) -> base.Objective:
  """The plain objective, or ZeroVL's coin-flipping mixup of it (config.mixup.enabled)."""
  if config.mixup.enabled:
    return zerovl.make_objective(config, model, mesh)
  return plain_objective(config, model, mesh)


def make_value_and_grad(config: ml_collections.ConfigDict, model,
                        mesh: Mesh) -> Optional[Callable]:
  """ZeroVL's decoupled accumulation when config.grad_accum.micro_batches > 1, else None."""
  if config.grad_accum.micro_batches > 1:
    return zerovl.make_value_and_grad(config, model, mesh)
  return None
