"""tfds:<name>[/<config>]:<split>: a TFDS dataset prepared in config.data.tfds_data_dir."""

import numpy as np
import tensorflow as tf

from vlalign.data import groups
from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base


def _builder(name: str, data_cfg):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(name, data_dir=data_cfg.tfds_data_dir or None)


def labelled_split(entry: dict, data_cfg) -> tuple[tf.data.Dataset, list[str] | None]:
  """(the entry's TFDS split in file order, images undecoded; the label feature's names)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, _, split = entry['source'].partition(':')[2].rpartition(':')
  builder = _builder(name, data_cfg)
  feature = builder.info.features[entry['label_key']]
  names = list(feature.names) if hasattr(feature, 'names') else None
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={entry['image_key']: tfds.decode.SkipDecoding()})
  return (ds.take(entry['max_examples']) if entry['max_examples'] else ds), names


class Tfds(base.Kind):
  """A TFDS split: one record per caption; hosts read even sub-splits."""
  name = 'tfds'

  def resolve(self, spec, arg, data_cfg, embedded):
    name, _, split = arg.rpartition(':')
    try:
      size = _builder(name, data_cfg).info.splits[split].num_examples
    except (KeyError, ValueError):
      size = None
    return sources_lib.Source(spec, self.name, tfds_name=name, tfds_split=split,
                              size=size or None)

  def stream(self, source, data_cfg, checks, *, seed, process_index, process_count, epochs,
             monitor, start=groups.Cursor()):
    """One group per epoch: the split in its fixed order (a resume re-reads up to one epoch)."""
    split = sources_lib.tfds_records(source, data_cfg, checks, process_index, process_count,
                                     monitor)
    return groups.grouped(groups.epoch_groups(seed, start, epochs), lambda unused: split,
                          data_cfg.shuffle_buffer)

  def records(self, source, data_cfg, checks):
    yield from sources_lib.tfds_records(source, data_cfg, checks, 0, 1).as_numpy_iterator()

  def convert_inputs(self, source, tfds_shards):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return [(f'{source.tfds_name}:{split}',
             sources_lib.Source(source.spec, self.name, tfds_name=source.tfds_name,
                                tfds_split=split))
            for split in tfds.even_splits(source.tfds_split, n=tfds_shards)]

  def labelled(self, source, entry, data_cfg):
    """Labels now and images later (entry 'stream'), or both now."""
    ds, names = labelled_split(entry, data_cfg)
    key = entry['label_key']
    if entry['stream']:  # labels now; images at each run (evaluate/datasets.stream_images)
      return None, np.asarray(list(ds.map(lambda ex: ex[key]).as_numpy_iterator()),
                              np.int64), names
    rows = [(ex[entry['image_key']], int(ex[key])) for ex in ds.as_numpy_iterator()]
    return [r[0] for r in rows], [r[1] for r in rows], names
