"""Orbax checkpointing of the train state plus the data position."""

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """The checkpoint in the workdir does not fit the state the config builds."""


def make_manager(directory: str, *, save_every: int, keep: int) -> ocp.CheckpointManager:
  """CheckpointManager saving every `save_every` steps and keeping the newest `keep`.

  Orbax writes each step into a temporary directory and renames it when complete, so a run
  killed mid-save leaves no half checkpoint that looks finished.
  """
  options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep,
                                         create=True)
  return ocp.CheckpointManager(directory, options=options, item_names=('state', 'data'))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_position: dict,
         force: bool = False) -> bool:
  """Saves state and data position at `step` (if the interval says so, or `force`)."""
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)), force=force)


def _key(k) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _shapes(tree: Any) -> dict[str, tuple]:
  return {'/'.join(_key(k) for k in p): (tuple(x.shape), str(x.dtype))
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def describe_mismatch(directory: str, abstract_state: Any) -> list[str]:
  """Differences between a saved state and the expected one, one line per parameter."""
  meta = ocp.StandardCheckpointer().metadata(os.path.join(directory, 'state')).item_metadata
  saved, want = _shapes(meta.tree), _shapes(abstract_state)
  lines = [f'{k}: in checkpoint {saved[k][0]} {saved[k][1]}, config builds {want[k][0]} '
           f'{want[k][1]}' for k in sorted(saved.keys() & want.keys()) if saved[k] != want[k]]
  lines += [f'{k}: only in the checkpoint' for k in sorted(saved.keys() - want.keys())]
  lines += [f'{k}: missing from the checkpoint' for k in sorted(want.keys() - saved.keys())]
  return lines


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: Any) -> tuple[int, Any, dict] | None:
  """(step, state placed like `abstract_state`, data position) of the newest checkpoint, or None."""
  step = manager.latest_step()
  if step is None:
    return None
  logging.info('Restoring checkpoint from step %d in %s', step, manager.directory)
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  except ValueError as e:
    step_dir = os.path.join(str(manager.directory), str(step))
    diffs = describe_mismatch(step_dir, abstract_state)
    if not diffs:
      raise
    shown = '\n  '.join(diffs[:20]) + (f'\n  ... and {len(diffs) - 20} more' if len(diffs) > 20
                                      else '')
    raise CheckpointMismatchError(
        f'checkpoint {step_dir} does not match the model/optimizer built from the config '
        f'({len(diffs)} differences); use a new --workdir or the config that wrote it:\n  {shown}'
    ) from e
  return step, out['state'], dict(out['data'])
