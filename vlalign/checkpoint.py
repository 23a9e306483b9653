"""Orbax checkpointing of the train state plus the data position."""

import logging
import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """The checkpoint in the workdir does not fit the state the config builds."""


class _Manager(ocp.CheckpointManager):
  """orbax's CheckpointManager that leaves JAX's preemption sync point to the train loop.

  The sync point keeps one counter per process, the step of the latest call, and on a notice
  it stops every process at (the largest counter) + 1, so the counter must only grow. orbax
  calls it too: in should_save / save (the current step, harmless) and from its background
  'save_finalize' thread with the step of a finished async save, a step the main thread has
  already left behind. A notice right then computes the stop step from that stale counter: a
  stop step some process has already passed, so one process enters the collective save while
  another enters the next train step (a hang, or a notice lost). The train loop alone asks
  (preemption.StopSignal.should_stop, once per step) and saves with force=True.
  """

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


def make_manager(directory: str, *, save_every: int, keep: int | None) -> ocp.CheckpointManager:
  """CheckpointManager saving every `save_every` steps and keeping the newest `keep` (0 or
  None: every checkpoint; config.keep_checkpoints).

  Orbax writes each step into a temporary directory and renames it when complete, so a run
  killed mid-save leaves no half checkpoint that looks finished.
  """
  if keep is not None and (keep < 0 or save_every < 1):
    raise ValueError(f'keep={keep} must be >= 0 and save_every={save_every} >= 1')
  options = ocp.CheckpointManagerOptions(save_interval_steps=save_every,
                                         max_to_keep=keep or None, create=True)
  return _Manager(directory, options=options, item_names=('state', 'data'))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_position: dict,
         force: bool = False) -> bool:
  """Saves state and data position at `step` (if the interval says so, or `force`)."""
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)), force=force)


def saved_steps(manager: ocp.CheckpointManager) -> list[int]:
  """The finished checkpoints on disk, once pending saves are complete (what a log can claim)."""
  manager.wait_until_finished()
  manager.reload()
  return sorted(manager.all_steps())


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


def restore_step(manager: ocp.CheckpointManager, step: int, abstract_state: Any):
  """(state placed like `abstract_state`, data position) of the checkpoint at `step`."""
  out = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  return out['state'], dict(out['data'])


def _mismatch_or_none(step_dir: str, abstract_state: Any) -> list[str] | None:
  """The parameter differences when the checkpoint's metadata reads and differs; None when
  it does not read (a damaged checkpoint) or matches."""
  try:
    return describe_mismatch(step_dir, abstract_state) or None
  except Exception:  # pylint: disable=broad-except
    return None


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Renames a damaged step directory out of orbax's view (so the step can be written again)
  and returns its new path."""
  step_dir = os.path.join(str(manager.directory), str(step))
  aside = f'{step_dir}.damaged'
  if jax.process_index() == 0:
    n = 1
    while os.path.exists(aside):
      n += 1
      aside = f'{step_dir}.damaged{n}'
    os.rename(step_dir, aside)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f'vlalign_set_aside_{step}')
  manager.reload()
  return aside


class CheckpointUnreadableError(RuntimeError):
  """Neither the newest checkpoint nor the one before it could be read."""


def _mismatch_error(step_dir: str, diffs: list[str]) -> CheckpointMismatchError:
  shown = '\n  '.join(diffs[:20]) + (f'\n  ... and {len(diffs) - 20} more' if len(diffs) > 20
                                     else '')
  return CheckpointMismatchError(
      f'checkpoint {step_dir} does not match the model/optimizer built from the config '
      f'({len(diffs)} differences); use a new --workdir or the config that wrote it:\n  {shown}')


def _restore_parsed(manager, step: int, abstract_state: Any, parse_data: Callable | None):
  """restore_step, with the data item passed through `parse_data` (its errors other than
  CheckpointMismatchError mean a damaged data item)."""
  state, data = restore_step(manager, step, abstract_state)
  return state, (parse_data(data) if parse_data else data)


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any,
                   parse_data: Callable[[dict], Any] | None = None
                   ) -> tuple[int, Any, Any] | None:
  """(step, state placed like `abstract_state`, data position) of the newest readable
  checkpoint, or None when there is none. `parse_data` turns the data item into what the
  caller needs (returned in its place); a data item it cannot parse (keys missing, wrong
  shapes) counts as unreadable, a CheckpointMismatchError it raises stops the restore.

  When the newest checkpoint does not read (damaged, or half-written by something other than
  orbax's atomic rename) and the one before it does, the newest is renamed to
  `<step>.damaged` (kept, out of orbax's view) with a warning and the one before is used. When
  neither reads, nothing is moved and CheckpointUnreadableError names both errors. A readable
  checkpoint of another model raises CheckpointMismatchError listing the parameters.
  """
  steps = sorted(manager.all_steps(), reverse=True)[:2]
  failed = []
  for step in steps:
    step_dir = os.path.join(str(manager.directory), str(step))
    logging.info('Restoring checkpoint from step %d in %s', step, manager.directory)
    try:
      state, data = _restore_parsed(manager, step, abstract_state, parse_data)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      diffs = _mismatch_or_none(step_dir, abstract_state)
      if diffs:
        raise _mismatch_error(step_dir, diffs) from e
      failed.append((step, e))
      continue
    for bad, e in failed:
      aside = _set_aside(manager, bad)
      logging.warning('checkpoint at step %d does not read (%s: %s); moved it to %s and resumed '
                      'from step %d instead', bad, type(e).__name__,
                      (str(e).splitlines() or [''])[0][:300], aside, step)
    return step, state, data
  if failed:
    raise CheckpointUnreadableError(
        'no checkpoint could be read; nothing was moved:\n  ' + '\n  '.join(
            f'step {st}: {type(e).__name__}: {(str(e).splitlines() or [""])[0][:300]}'
            for st, e in failed)) from failed[0][1]
  return None


def pick_step(steps: list[int], step: int | None, folder: str) -> int:
  """`step` (default: the newest of `steps`); FileNotFoundError naming `folder` when there is no
  checkpoint or not that one."""
  if not steps:
    raise FileNotFoundError(f'no checkpoints in {folder}')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f'no checkpoint at step {step} in {folder} (there are {steps})')
  return step
