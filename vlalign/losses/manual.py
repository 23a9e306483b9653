"""Small helpers for loss bodies that run per device inside jax.shard_map."""

from typing import Any, Sequence

import jax


def axis_name(batch_axes: Sequence[str]):
  """The collective axis name for `batch_axes`: one name, or a tuple of several."""
  axes = tuple(batch_axes)
  return axes if len(axes) > 1 else axes[0]


def as_varying(tree: Any, name) -> Any:
  """Each leaf typed as varying over the mesh axes `name` (a no-op where it already is).

  Inside shard_map a custom_vjp or a loop carry must see the same per-device type in and out;
  casting replicated inputs (the logit scale, bias) to varying makes autodiff sum their
  per-device gradients over the axes (the transpose of the cast is a psum).
  """
  axes = name if isinstance(name, tuple) else (name,)

  def one(x):
    have = jax.typeof(x).mat.varying
    missing = tuple(a for a in axes if a not in have)
    return jax.lax.pcast(x, missing, to='varying') if missing else x
  return jax.tree.map(one, tree)
