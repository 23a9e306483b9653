"""Training recipes beyond the plain contrastive loss, each one small module built on shared
pieces (bank.py: FIFO embedding bank; ema.py: momentum parameters; data/views.py: extra views).

A method module provides:
  init(config, model, params, model_state, key) -> (params, extra)
      its heads added to the params (trained, in the optimizer) and its state (`TrainState.extra`:
      queues, banks, EMA copies), built inside the jitted init;
  extra_shardings(config, state_shardings, mesh) -> shardings of `extra`;
  make_objective(config, model, mesh) -> objective(params, model_state, extra, batch, rng) ->
      (loss, (losses, logit params, model_state, extra)), the train step's loss function: losses
      holds 'loss' (the total) and 'loss/<component>' entries, logged as train/loss/...
"""

import types

from vlalign.methods import brivl, declip, vicha

# name -> module; 'clip' is the train step's own contrastive objective (config.loss).
METHODS = {'clip': None, 'brivl': brivl, 'declip': declip, 'vicha': vicha}


def get_method(name: str) -> types.ModuleType | None:
  """The method module for config.method.name (None for 'clip')."""
  if name not in METHODS:
    raise ValueError(f'config.method.name: {name!r} is not one of {sorted(METHODS)}')
  return METHODS[name]
