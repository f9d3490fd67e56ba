"""vidflow: GPU video analytics in Python.

Decode many streams (NVDEC on CUDA, FFmpeg on CPU), batch them, run detectors, trackers and
secondary models, and reach every tensor zero-copy through DLPack. See DESIGN.md.

The public names below are imported lazily, so ``import vidflow`` stays fast and a missing
optional dependency only matters for the part that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # core types
    "FrameInfo": "vidflow.batch", "Objects": "vidflow.batch", "Batch": "vidflow.batch",
    # errors
    "VidflowError": "vidflow.errors", "ConfigError": "vidflow.errors", "SourceError": "vidflow.errors",
    "DecodeError": "vidflow.errors", "StreamUnavailable": "vidflow.errors", "StageError": "vidflow.errors",
    "SinkError": "vidflow.errors",
    # pipeline
    "Pipeline": "vidflow.pipeline", "Muxer": "vidflow.mux", "RunSummary": "vidflow.stats",
    # sources
    "SourceFrame": "vidflow.sources.base", "FileSource": "vidflow.sources.file",
    "SyntheticSource": "vidflow.sources.synthetic", "RtspSource": "vidflow.sources.rtsp", "UriSource": "vidflow.sources.rtsp",
    # stages
    "Detector": "vidflow.stages.detect", "Tracker": "vidflow.stages.track",
    "Classifier": "vidflow.stages.classify", "Embedder": "vidflow.stages.embed",
    "Gallery": "vidflow.gallery", "Identify": "vidflow.gallery",
    # sinks
    "JsonlSink": "vidflow.sinks.jsonl", "VideoSink": "vidflow.sinks.video", "Tiler": "vidflow.sinks.tiler",
    # engines
    "load_engine": "vidflow.engines", "TorchEngine": "vidflow.engines.torch", "OnnxEngine": "vidflow.engines.onnx",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'vidflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
