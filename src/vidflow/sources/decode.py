"""TRANSITIONAL shim: the decoders moved to :mod:`vidflow.sources.decoders` (the protocol, FFmpeg,
the choice) and :mod:`vidflow.sources._nvdec` (NVDEC). Old imports keep working."""

from __future__ import annotations

from ._nvdec import NVDEC_CODECS, NvdecDecoder, import_nvc, nvdec_info, nvdec_unsupported
from .decoders import ffmpeg_rgb, stream_color

__all__ = ["ffmpeg_rgb", "stream_color", "nvdec_info", "nvdec_unsupported", "NvdecDecoder", "import_nvc",
           "NVDEC_CODECS"]
