"""tf.data service (config.data.service_address): each source's example stream runs on remote
workers (vlalign.tools.data_service starts a dispatcher and workers).

Cut point: everything of a source up to its decoded, augmented examples (reading, checks,
decode, crop, extra views; pipeline.good_examples) runs on the workers; the mixture, batching,
tokenizing and prefetch stay on the trainer. Mode: dynamic sharding ('distributed_epoch'): the
group plan (Dataset.range of groups, data/groups.py) is the split source, so each group of files
is read whole by one worker and every group is handed out at most once. Each TrainIterator makes
its own anonymous job (a resumed run never joins the job of the run before it).

A worker runs the serialized graph, so a Python callback (PyFunc / EagerPyFunc: from_generator,
numpy_function, py_function) cannot cross; `check_graph` refuses such a pipeline with one line
naming the stage that brings it.
"""

import logging

import tensorflow as tf

PYTHON_OPS = frozenset({'PyFunc', 'PyFuncStateless', 'EagerPyFunc'})


def python_functions(ds: tf.data.Dataset) -> list[str]:
  """Names of the functions (or 'graph') of ds's serialized graph that call Python."""
  graph = tf.compat.v1.GraphDef.FromString(
      ds._as_serialized_graph(  # pylint: disable=protected-access
          external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE).numpy())
  found = ['graph'] if any(n.op in PYTHON_OPS for n in graph.node) else []
  for fn in graph.library.function:
    if any(n.op in PYTHON_OPS for n in fn.node_def):
      found.append(fn.signature.name)
  return sorted(found)


def check_graph(ds: tf.data.Dataset, stage: str) -> None:
  """ConfigError naming `stage` when ds still holds a Python callback."""
  from vlalign.config_lib import ConfigError  # pylint: disable=g-import-not-at-top  (a cycle)
  found = python_functions(ds)
  if found:
    raise ConfigError(
        f'config.data.service_address: {stage} runs Python (PyFunc in {found[0]}'
        f'{f" and {len(found) - 1} more" if len(found) > 1 else ""}), which tf.data service '
        f'workers cannot run; use a pure-graph setting or set data.service_address=\'\'')


def distribute(ds: tf.data.Dataset, address: str) -> tf.data.Dataset:
  """ds, produced by the workers of the dispatcher at `address` (dynamic sharding)."""
  return ds.apply(tf.data.experimental.service.distribute(
      processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
      service=address if '://' in address else f'grpc://{address}'))


def serve(stream: tf.data.Dataset, examples: tf.data.Dataset, src, s: int, address: str
          ) -> tf.data.Dataset:
  """Source s's (a sources.Source `src`) examples produced by the tf.data service at `address`;
  a ConfigError naming the stage when its raw `stream`, or the stages after it, call Python."""
  reader = (f'config.data.sources[{s}]={src.spec!r}: the {src.kind} reader'
            + (' (its Python pre-check and fallback; config.data.tfrecord_reader=\'graph\' '
               'reads trusted shards by TF ops alone)'
               if src.kind in ('tfrecord', 'embedded') else ''))
  check_graph(stream, reader)
  check_graph(examples, f'source {s}\'s decoding / extra views (config.data.views, '
              f'the tokenizer) / concepts')
  logging.info('data: source %d %r from the tf.data service at %s (dynamic sharding)', s,
               src.spec, address)
  return distribute(examples, address)
