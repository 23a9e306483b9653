"""Orbax checkpointing of the train state plus the data position."""

import logging
from typing import Any

import orbax.checkpoint as ocp


def make_manager(directory: str, *, save_every: int, keep: int) -> ocp.CheckpointManager:
  """CheckpointManager saving every `save_every` steps and keeping the newest `keep`."""
  options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep,
                                         create=True)
  return ocp.CheckpointManager(directory, options=options, item_names=('state', 'data'))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_position: dict,
         force: bool = False) -> bool:
  """Saves state and data position at `step` (if the interval says so, or `force`)."""
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)), force=force)


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: Any) -> tuple[int, Any, dict] | None:
  """(step, state placed like `abstract_state`, data position) of the newest checkpoint, or None."""
  step = manager.latest_step()
  if step is None:
    return None
  logging.info('Restoring checkpoint from step %d in %s', step, manager.directory)
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  return step, out['state'], dict(out['data'])
