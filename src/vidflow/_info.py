"""``vidflow info``: what this machine offers vidflow (device, decoders, encoders, versions)."""

from __future__ import annotations

import platform

__all__ = ["info", "info_text"]


def info() -> dict:
    """Facts about this machine as vidflow sees it: device, decoders, encoders, versions."""
    import torch

    out: dict = {"vidflow": __import__("vidflow").__version__, "python": platform.python_version(),
                 "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out["cuda"] = torch.version.cuda
    try:
        import av

        out["pyav"] = av.__version__
        out["ffmpeg"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
        out["libx264"] = _has_encoder("libx264")
    except ImportError:
        out["pyav"] = None
    try:
        from .sources._nvdec import nvdec_info

        out["nvdec"] = nvdec_info()
    except ImportError as e:
        out["nvdec"] = {"available": False, "reason": str(e)}
    try:
        from .sinks.video import nvenc_available

        out["nvenc"] = nvenc_available()
    except ImportError:
        out["nvenc"] = None
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        out["torchvision"] = None
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        out["onnxruntime"] = None
    return out


def _has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def _yes(v: object) -> str:
    return "yes" if v is True else "no" if v in (False, None) else str(v)


def info_text(facts: dict) -> str:
    """``vidflow info`` as a short table (``--json`` prints the dict)."""
    nvdec = facts.get("nvdec") or {}
    if isinstance(nvdec, dict):
        codecs = ", ".join(sorted(nvdec.get("codecs") or {}))
        nvdec_s = (f"yes ({codecs})" if codecs else "yes") if nvdec.get("available") else \
            f"no ({nvdec.get('reason') or 'not available'})"
    else:
        nvdec_s = str(nvdec)
    gpus = facts.get("gpus") or []
    rows = [
        ("vidflow", facts.get("vidflow")),
        ("python", facts.get("python")),
        ("torch", f"{facts.get('torch')}" + (f" (CUDA {facts.get('cuda')})" if facts.get("cuda") else "")),
        ("device", f"cuda ({', '.join(gpus)})" if facts.get("cuda_available") else "cpu (no CUDA device)"),
        ("decode", f"FFmpeg via PyAV {facts.get('pyav')} (libavcodec {facts.get('ffmpeg')})"
                   if facts.get("pyav") else "PyAV not installed: pip install av"),
        ("NVDEC", nvdec_s),
        ("encode", f"libx264 {_yes(facts.get('libx264'))}, NVENC {_yes(facts.get('nvenc'))}"),
        ("onnxruntime", f"{facts.get('onnxruntime')} ({', '.join(facts.get('onnxruntime_providers') or [])})"
                        if facts.get("onnxruntime") else "not installed: pip install vidflow[onnx]"),
        ("torchvision", facts.get("torchvision") or "not installed"),
    ]
    return "\n".join(f"{k:12s} {v}" for k, v in rows)
