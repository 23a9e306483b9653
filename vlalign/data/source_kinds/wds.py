"""wds:<glob>: WebDataset tar shards as img2dataset writes them."""

from vlalign.data import sources as sources_lib
from vlalign.data.source_kinds import base


class WebDataset(base.FileKind):
  """Uncompressed tar shards of <key>.<image ext> / <key>.txt / <key>.json samples."""
  name = 'wds'

  def read(self, path, data_cfg, checks):
    return sources_lib.read_wds(path, checks)
