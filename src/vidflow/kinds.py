"""THE name table: what each YAML kind, public name and engine format refers to.

``KINDS[section][kind] = "module:Name"``. YAML items are ``kind: {kwargs}`` looked up here
(``vidflow.config``); every class here is also a lazy public name of the package
(``vidflow.FileSource``); ``vidflow inspect`` and docs/KINDS.md are generated from it. Adding a
kind is one line in its section (and a test of the kind itself); ``tests/unit/test_kinds.py``
imports every entry and checks that its constructor's keyword arguments are annotated and
documented.

Nothing here is imported until it is used: this module holds strings only.
"""

from __future__ import annotations

__all__ = ["KINDS", "SECTIONS", "YAML_SECTIONS", "MUXER", "EXPORTS", "ENGINES", "MODEL_SUFFIXES", "EXTRAS",
           "exports"]

KINDS: dict[str, dict[str, str]] = {
    "sources": {
        "file": "vidflow.sources.file:FileSource",
        "synthetic": "vidflow.sources.synthetic:SyntheticSource",
        "rtsp": "vidflow.sources.uri:RtspSource",
        "uri": "vidflow.sources.uri:UriSource",
    },
    "stages": {
        "detect": "vidflow.stages.detect:Detector",
        "track": "vidflow.stages.track:Tracker",
        "classify": "vidflow.stages.classify:Classifier",
        "embed": "vidflow.stages.embed:Embedder",
        "identify": "vidflow.gallery:Identify",
        "draw": "vidflow.ops.draw:Annotate",
    },
    "sinks": {
        "jsonl": "vidflow.sinks.jsonl:JsonlSink",
        "video": "vidflow.sinks.video:VideoSink",
        "parquet": "vidflow.sinks.parquet:ParquetSink",
        "broker": "vidflow.sinks.broker:BrokerSink",
    },
    # Heads decode a model's raw output into objects (``Detector(head=...)``); transports carry a
    # sink's records to a broker (``broker: {transport: ...}``). Both are filled as they land.
    "heads": {},
    "transports": {
        "mqtt": "vidflow.sinks.transports.mqtt:MqttTransport",
        "kafka": "vidflow.sinks.transports.kafka:KafkaTransport",
        "redis": "vidflow.sinks.transports.redis:RedisTransport",
        "zmq": "vidflow.sinks.transports.zmq:ZmqTransport",
        "webhook": "vidflow.sinks.transports.webhook:WebhookTransport",
    },
}

#: sections a pipeline YAML lists items of (``heads`` / ``transports`` are named inside items)
YAML_SECTIONS = ("sources", "stages", "sinks")
SECTIONS = tuple(KINDS)

#: the ``muxer:`` mapping of a YAML is this class's keyword arguments
MUXER = "vidflow.mux:Muxer"

#: model file formats -> engine class (``vidflow.engines.load_engine``)
ENGINES: dict[str, str] = {
    "onnx": "vidflow.engines.onnx:OnnxEngine",
    "torchscript": "vidflow.engines.torch:TorchEngine",
    "torch": "vidflow.engines.torch:TorchEngine",
}
#: model file suffix -> format (``.pt`` is accepted only when it is a TorchScript archive)
MODEL_SUFFIXES: dict[str, str] = {".onnx": "onnx", ".torchscript": "torchscript", ".pt": "torchscript",
                                  ".jit": "torchscript", ".ts": "torchscript"}

#: importable top-level module -> the ``pip install vidflow[extra]`` that brings it
EXTRAS: dict[str, str] = {"onnx": "onnx", "onnxruntime": "onnx", "PyNvVideoCodec": "nvdec"}

#: public names of the package that are not kinds (kinds are exported under their class names)
EXPORTS: dict[str, str] = {
    "FrameInfo": "vidflow.batch:FrameInfo", "Objects": "vidflow.batch:Objects", "Batch": "vidflow.batch:Batch",
    "VidflowError": "vidflow.errors:VidflowError", "ConfigError": "vidflow.errors:ConfigError",
    "SourceError": "vidflow.errors:SourceError", "DecodeError": "vidflow.errors:DecodeError",
    "StreamUnavailable": "vidflow.errors:StreamUnavailable", "StageError": "vidflow.errors:StageError",
    "SinkError": "vidflow.errors:SinkError",
    "Pipeline": "vidflow.pipeline:Pipeline", "Muxer": MUXER, "RunSummary": "vidflow.stats:RunSummary",
    "SourceFrame": "vidflow.sources.base:SourceFrame", "Gallery": "vidflow.gallery:Gallery",
    "Tiler": "vidflow.sinks.tiler:Tiler", "load_engine": "vidflow.engines:load_engine",
    "TorchEngine": "vidflow.engines.torch:TorchEngine", "OnnxEngine": "vidflow.engines.onnx:OnnxEngine",
    "read_jsonl": "vidflow.tables:read_jsonl", "export_module": "vidflow.export:export_module",
}


def exports() -> dict[str, str]:
    """Every lazy public name of ``vidflow``: :data:`EXPORTS` plus each kind's class name."""
    out = dict(EXPORTS)
    for table in KINDS.values():
        for target in table.values():
            out.setdefault(target.rpartition(":")[2], target)
    return out
