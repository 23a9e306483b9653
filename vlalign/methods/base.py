"""The contract of a training recipe ("method"): what a module in vlalign/methods/ provides and
what the train step asks of it. train.py and config_lib talk to a method only through `Method`.

A method module defines:
  validate(config) -> None
      its config checks beyond each field's own range (cross-field: sizes that must divide the
      batch, towers it needs, views it trains on); raises config_lib.ConfigError naming a field.
  make_objective(config, model, mesh) -> objective
      objective(params, model_state, extra, batch, rng) -> (loss, (losses, logit params,
      model_state, extra)): the train step's loss function. `losses` holds 'loss' (the total)
      and 'loss/<component>' / 'accuracy/<direction>' entries, logged as train/...; logit
      params is {'scale'[, 'bias']} (logged as train/temperature, train/bias).
and may define (the defaults below otherwise):
  init(config, model, params, model_state, key) -> (params, extra)
      its heads added to the params (trained) and its state (`TrainState.extra`: queues, banks,
      EMA copies), built inside the jitted init. Default: no heads, no state.
  extra_shardings(config, state_shardings, mesh) -> shardings of `extra`. Default: {}.
  make_value_and_grad(config, model, mesh) -> value_and_grad or None
      a replacement for jax.value_and_grad(objective) with the same outputs (ZeroVL's decoupled
      accumulation); None (the default): the step differentiates the objective itself.
  data_needs(config) -> DataNeeds: the extra inputs its batches must carry. Default: none.
  defaults() -> ConfigDict: its hyperparameters, config.method.<name>.* (base_config() holds
      every method's namespace; validation refuses a changed field of a method not chosen).
      Default: none (no namespace).
and the constant
  LOSS_FIELDS: the config.loss fields its objective reads (default: all); validation refuses a
      changed config.loss field that the chosen method ignores.
"""

import dataclasses
import types
from typing import Any, Callable, Optional

import ml_collections
from jax.sharding import Mesh

Objective = Callable[..., tuple[Any, tuple[dict, dict, Any, Any]]]


@dataclasses.dataclass(frozen=True)
class DataNeeds:
  """Inputs beyond one image view and its tokens: `views` the data.views flags that must be on
  (data/views.py), `concepts` ViCHA's visual concepts (a data.concepts.Concepts, or None)."""
  views: tuple[str, ...] = ()
  concepts: Any = None


def no_state(config, model, params, model_state, key) -> tuple[Any, dict]:
  """init's default: the model's params as they are, no method state."""
  del config, model, model_state, key
  return params, {}


def no_extra_shardings(config, state_shardings, mesh: Mesh) -> dict:
  """extra_shardings' default: nothing to place."""
  del config, state_shardings, mesh
  return {}


def no_value_and_grad(config, model, mesh: Mesh) -> None:
  """make_value_and_grad's default: the train step's own jax.value_and_grad."""
  del config, model, mesh


def no_defaults() -> ml_collections.ConfigDict:
  """defaults' default: a method without hyperparameters of its own."""
  return ml_collections.ConfigDict()


LOSS_FIELDS = ('name', 'label_smoothing', 'reduction', 'impl', 'chunk')  # config.loss's fields


def no_data_needs(config: ml_collections.ConfigDict) -> DataNeeds:
  """data_needs' default: the first image view and its tokens only."""
  del config
  return DataNeeds()


@dataclasses.dataclass(frozen=True)
class Method:
  """One recipe, as train.py and config_lib use it (see the module docstring)."""
  name: str
  validate: Callable[[ml_collections.ConfigDict], None]
  make_objective: Callable[..., Objective]
  init: Callable[..., tuple[Any, dict]] = no_state
  extra_shardings: Callable[..., dict] = no_extra_shardings
  make_value_and_grad: Callable[..., Optional[Callable]] = no_value_and_grad
  data_needs: Callable[[ml_collections.ConfigDict], DataNeeds] = no_data_needs
  defaults: Callable[[], ml_collections.ConfigDict] = no_defaults
  loss_fields: tuple[str, ...] = LOSS_FIELDS


REQUIRED = ('validate', 'make_objective')
OPTIONAL = ('init', 'extra_shardings', 'make_value_and_grad', 'data_needs', 'defaults')


def from_module(name: str, module: types.ModuleType) -> Method:
  """The Method a module provides; a missing required function is a TypeError naming it."""
  missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
  if missing:
    raise TypeError(f'method module {module.__name__} lacks {missing} (methods/base.py)')
  parts = {f: getattr(module, f) for f in REQUIRED + OPTIONAL if hasattr(module, f)}
  return Method(name=name, loss_fields=tuple(getattr(module, 'LOSS_FIELDS', LOSS_FIELDS)),
                **parts)
