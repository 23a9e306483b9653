"""Device mesh, parameter partition rules and global-batch assembly."""

import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vlalign.config_lib import ConfigError


def make_mesh(axes: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
  """Mesh over all devices with named axis sizes; one axis may be -1 (the rest)."""
  devices = list(devices if devices is not None else jax.devices())
  names, sizes = list(axes.keys()), list(axes.values())
  if sizes.count(-1) > 1:
    raise ConfigError(f'config.mesh: at most one axis may be -1, got {dict(axes)}')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ConfigError(f'config.mesh: {dict(axes)} does not divide {len(devices)} devices')
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ConfigError(f'config.mesh: {dict(zip(names, sizes))} needs {int(np.prod(sizes))} '
                     f'devices but {len(devices)} are available')
  return jax.make_mesh(tuple(sizes), tuple(names), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def _path_str(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def _fit(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """`spec` with each mesh axis that does not divide its dimension dropped (replicated there)."""
  out = []
  for dim, axes in zip(shape, spec):
    names = axes if isinstance(axes, tuple) else (() if axes is None else (axes,))
    for a in names:
      if a not in mesh.shape:
        raise ConfigError(f'config.partition_rules: mesh axis {a!r} is not in config.mesh '
                         f'{dict(mesh.shape)}')
    out.append(axes if dim % int(np.prod([mesh.shape[a] for a in names])) == 0 else None)
  return P(*out)


def param_shardings(abstract_tree: Any, mesh: Mesh, rules: Sequence[tuple[str, tuple]]) -> Any:
  """NamedSharding per leaf: first regex in `rules` matching its path, else replicated. Where a
  rule's mesh axis does not divide the leaf's dimension, that dimension stays replicated (so one
  rule can cover tensors of many sizes)."""
  compiled = [(re.compile(r), P(*spec)) for r, spec in rules]

  def one(path, leaf):
    name = _path_str(path)
    for regex, spec in compiled:
      if regex.search(name):
        if len(spec) > len(getattr(leaf, 'shape', ())):
          raise ConfigError(f'config.partition_rules: rule {regex.pattern!r} -> {spec} has more axes than '
                           f'{name} of shape {leaf.shape}')
        return NamedSharding(mesh, _fit(spec, leaf.shape, mesh))
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map_with_path(one, abstract_tree)


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str]) -> NamedSharding:
  """Sharding that splits the leading (batch) dimension over `batch_axes`."""
  return NamedSharding(mesh, P(tuple(batch_axes)))


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Global jax.Arrays assembled from this process's slice of the batch."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def check_batch(global_batch_size: int, mesh: Mesh, batch_axes: Sequence[str]) -> None:
  """Clear error when the global batch does not split evenly over processes and devices."""
  n = int(np.prod([mesh.shape[a] for a in batch_axes]))
  if global_batch_size % n:
    raise ConfigError(f'config.data.global_batch={global_batch_size} is not divisible by the '
                     f'{n} devices on mesh axes {tuple(batch_axes)}')
  if global_batch_size % jax.process_count():
    raise ConfigError(f'config.data.global_batch={global_batch_size} is not divisible by '
                     f'{jax.process_count()} processes')
