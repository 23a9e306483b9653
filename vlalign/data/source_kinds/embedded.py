"""embedded[:<name>]: the built-in generated dataset's training sources (TFRecord shards)."""

from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base, tfrecord
from vlalign.data.spec import DataError


class Embedded(tfrecord.TFRecord):
  """The generated dataset's TFRecord shards; its size is known from its config."""
  name = 'embedded'
  convert_refusal = 'the embedded dataset is TFRecord already'

  def resolve(self, spec, arg, data_cfg, embedded):
    if embedded is None:
      raise DataError(f'config.data.sources: {spec!r} needs the embedded dataset')
    sizes = dict(data_cfg.embedded.train_sizes)
    names = sorted(embedded['train']) if not arg else [arg]
    for name in names:
      if name not in embedded['train']:
        raise DataError(f'config.data.sources: {spec!r}: the embedded dataset has sources '
                         f'{sorted(embedded["train"])}')
    files = sorted(f for n in names for f in sources_lib.list_files(embedded['train'][n]))
    return sources_lib.Source(spec, self.name, files=files, size=sum(sizes[n] for n in names))

  # Only embedded:heldout has labels (evaluate/datasets reads it from the held-out arrays).
  labelled = base.Kind.labelled
