"""Decoder back-ends behind :class:`~vidflow.sources.file.FileSource`.

Both take compressed ``av.Packet`` objects from the same PyAV demuxer:

=============  =============================  ==============================================
back-end       yields                         notes
=============  =============================  ==============================================
FFmpeg (PyAV)  ``av.VideoFrame``; RGB via     frame threads; RGB equals PyAV's own
               :func:`ffmpeg_rgb` (CPU)       ``to_ndarray("rgb24")`` (frame's matrix/range)
NVDEC          NV12 ``[H*3//2, W]`` uint8     PyNvVideoCodec; H.264/HEVC go through
               CUDA tensors (own copies)      ``*_mp4toannexb``; 8-bit 4:2:0 only
=============  =============================  ==============================================

The decoder's output surfaces are recycled, so each NVDEC picture is copied (device to device)
into a fresh tensor on the source's own CUDA stream, which is synchronised before the tensor is
handed on (consumers call ``record_stream`` - :func:`vidflow.ops.color.convert_into` does).
"""

from __future__ import annotations

import heapq
import logging
import threading
from typing import Any

import numpy as np
import torch

from ..ops.color import default_matrix

__all__ = ["ffmpeg_rgb", "stream_color", "nvdec_info", "nvdec_unsupported", "NvdecDecoder", "import_nvc"]

log = logging.getLogger(__name__)

# PyAV codec name -> PyNvVideoCodec cudaVideoCodec member
NVDEC_CODECS = {"h264": "H264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "vp8": "VP8",
                "mpeg2video": "MPEG2"}
_ANNEXB = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
_NV12_OK = ("yuv420p", "yuvj420p", "nv12")
# AVColorSpace -> matrix swscale uses (BT470BG, SMPTE170M, FCC-ish -> 601; BT709 -> 709)
_AVCOL_SPC = {1: "bt709", 5: "bt601", 6: "bt601"}


def stream_color(stream: Any) -> tuple[str, bool]:
    """``(matrix, full_range)`` from a PyAV video stream's metadata, as FFmpeg would convert it:
    unspecified matrix -> :func:`default_matrix`; unspecified range -> limited."""
    cc = stream.codec_context
    matrix = _AVCOL_SPC.get(int(cc.colorspace or 2)) or default_matrix(cc.height or 0)
    full = int(cc.color_range or 0) == 2 or (cc.format is not None and cc.format.name.startswith("yuvj"))
    return matrix, full


def ffmpeg_rgb(frame: Any) -> torch.Tensor:
    """An ``av.VideoFrame`` -> RGB ``[3, H, W]`` uint8 CPU tensor (a zero-copy HWC view), exactly
    PyAV's ``frame.to_ndarray(format="rgb24")``."""
    arr = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(arr).permute(2, 0, 1)


# ------------------------------------------------------------------------------------ NVDEC
_NVC: Any = None
_NVC_ERR: str | None = None
_NVC_LOCK = threading.Lock()


def import_nvc() -> Any:
    """Import PyNvVideoCodec once; raise ``ImportError`` with the reason when it cannot work."""
    global _NVC, _NVC_ERR
    with _NVC_LOCK:
        if _NVC is None and _NVC_ERR is None:
            quiet = logging.getLogger("PyNvVideoCodec")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)       # its import logs errors on machines without NVENC
            try:
                import PyNvVideoCodec as nvc
                _NVC = nvc
            except Exception as e:                 # ImportError, RuntimeError (driver), OSError
                _NVC_ERR = f"PyNvVideoCodec unavailable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            finally:
                quiet.setLevel(level)
    if _NVC is None:
        raise ImportError(_NVC_ERR)
    return _NVC


def nvdec_info(gpu: int = 0) -> dict[str, Any]:
    """What NVDEC can do here: ``{"available": bool, "version": str | None, "reason": str,
    "codecs": {name: {"max_width", "max_height", ...}}}`` (8-bit 4:2:0 capabilities)."""
    info: dict[str, Any] = {"available": False, "version": None, "reason": "", "codecs": {}}
    if not torch.cuda.is_available():
        info["reason"] = "CUDA not available"
        return info
    try:
        nvc = import_nvc()
    except ImportError as e:
        info["reason"] = str(e)
        return info
    info["version"] = getattr(nvc, "__version__", None)
    info["available"] = True
    caps_fn = getattr(nvc, "GetDecoderCaps", None)
    cf = getattr(nvc, "cudaVideoChromaFormat", None)
    yuv420 = next((getattr(cf, n) for n in dir(cf) if "420" in n), None) if cf is not None else None
    if yuv420 is None:
        caps_fn = None
    for name, member in NVDEC_CODECS.items():
        if caps_fn is None:
            break
        try:
            caps = caps_fn(gpuid=gpu, codec=getattr(nvc.cudaVideoCodec, member),
                           chromaformat=yuv420, bitdepth=8)
        except Exception as e:                     # noqa: BLE001 - report, never crash `vidflow info`
            info["codecs"][name] = {"error": str(e)}
            continue
        caps = dict(caps) if not isinstance(caps, dict) else caps
        if caps.get("supported", caps.get("is_supported", 1)) and caps.get("width_max", 1):
            info["codecs"][name] = caps
    if caps_fn is None:
        info["codecs"] = {n: {} for n in NVDEC_CODECS}
    return info


def nvdec_unsupported(stream: Any) -> str | None:
    """Why NVDEC cannot take this PyAV stream (``None`` when it can, as far as we can tell)."""
    cc = stream.codec_context
    if cc.name not in NVDEC_CODECS:
        return f"codec {cc.name!r} is not decoded by NVDEC here (supported: {sorted(NVDEC_CODECS)})"
    fmt = cc.format.name if cc.format is not None else None
    if fmt not in _NV12_OK:
        return f"pixel format {fmt} (NVDEC path handles 8-bit 4:2:0 only)"
    return None


def _stream_context(stream: torch.cuda.Stream) -> int:
    """The CUDA driver context that owns torch's ``stream`` (0 if unknown).

    PyNvVideoCodec refuses a stream that does not belong to the context it is given (error
    801). A new thread has no current context until a CUDA runtime call binds torch's, and torch
    may hand out pooled streams without making one, so: bind it with a cheap runtime call on the
    stream, then ask the driver which context owns the stream."""
    import ctypes
    stream.query()                                    # a runtime call: binds torch's context here
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    ctx = ctypes.c_void_p()
    get = getattr(lib, "cuStreamGetCtx", None)
    if get is not None and get(ctypes.c_void_p(stream.cuda_stream), ctypes.byref(ctx)) == 0 and ctx.value:
        return int(ctx.value)
    if lib.cuCtxGetCurrent(ctypes.byref(ctx)) == 0 and ctx.value:
        return int(ctx.value)
    return 0


class NvdecDecoder:
    """NVDEC decoding of one PyAV video ``stream`` on CUDA ``device``.

    ``decode(packet)`` takes an ``av.Packet`` (``None`` = end of stream: flush) and returns a list
    of ``(pts_ticks | None, nv12)`` in presentation order, ``nv12`` a fresh uint8 CUDA tensor
    ``[h*3//2, w]`` (h rounded up to even) that nothing else writes to. ``pts_ticks`` is in
    ``stream.time_base`` units: the packet timestamps in ascending order (the order NVDEC
    displays them), ``None`` when the packets carry none."""

    def __init__(self, stream: Any, device: torch.device) -> None:
        reason = nvdec_unsupported(stream)
        if reason:
            raise RuntimeError(reason)
        nvc = import_nvc()
        self._nvc = nvc
        self.device = torch.device(device)
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        cc = stream.codec_context
        self.codec = cc.name
        self.width, self.height = int(cc.width), int(cc.height)
        self._stream = torch.cuda.Stream(self.device)
        self._pts: list[int] = []
        self._bind(stream)
        #: where each picture is written: ``alloc((rows, width))`` -> a uint8 CUDA tensor, or
        #: None for a fresh one (a decode process passes its ring slots: no second copy)
        self.alloc: Any = None
        with torch.cuda.device(self.device):
            self._dec = nvc.CreateDecoder(
                gpuid=self.device.index, codec=getattr(nvc.cudaVideoCodec, NVDEC_CODECS[cc.name]),
                cudacontext=_stream_context(self._stream), cudastream=self._stream.cuda_stream,
                usedevicememory=True)

    def _bind(self, stream: Any) -> None:
        from av.bitstream import BitStreamFilterContext
        bsf = _ANNEXB.get(self.codec)
        self._bsf = BitStreamFilterContext(bsf, stream) if bsf else None
        self._pts.clear()

    def rebind(self, stream: Any) -> bool:
        """Go on decoding a new PyAV ``stream`` (the same file re-opened, to loop) with this
        decoder, after ``decode(None)`` flushed the last one. NVDEC's parser starts afresh after
        an end-of-stream packet, so the decoder and its surfaces are kept: creating and
        destroying them at every pass of a short looped clip cost a fifth of a decode process's
        CPU. ``False`` (nothing changed) when the stream needs another decoder: other codec or
        size, or a format NVDEC cannot take."""
        cc = stream.codec_context
        if (cc.name != self.codec or (int(cc.width or 0), int(cc.height or 0)) != (self.width, self.height)
                or nvdec_unsupported(stream) or self._dec is None):
            return False
        self._bind(stream)
        return True

    def decode(self, packet: Any | None) -> list[tuple[int | None, torch.Tensor]]:
        if packet is not None and packet.size == 0:
            return []
        if self._bsf is not None:
            pkts = self._bsf.filter(packet)
        else:
            pkts = [packet] if packet is not None else []
        out: list[tuple[int | None, torch.Tensor]] = []
        with torch.cuda.stream(self._stream):
            for p in pkts:
                if p.pts is not None:
                    heapq.heappush(self._pts, int(p.pts))
                out += self._submit(p)
            if packet is None:
                out += self._submit(None)          # empty packet = CUVID end of stream: flush
            if out:
                self._stream.synchronize()
        return out

    def _submit(self, packet: Any | None) -> list[tuple[int | None, torch.Tensor]]:
        pd = self._nvc.PacketData()
        # the packet's own bytes, no copy (PyAV packets export a buffer); kept alive by ``buf``
        buf = np.frombuffer(packet, dtype=np.uint8) if packet is not None and packet.size else None
        pd.bsl_data = int(buf.ctypes.data) if buf is not None else 0
        pd.bsl = int(buf.size) if buf is not None else 0
        frames = self._dec.Decode(pd)
        res = []
        for f in frames:
            pts = heapq.heappop(self._pts) if self._pts else None
            res.append((pts, self._copy(f)))
        del buf
        return res

    def _copy(self, f: Any) -> torch.Tensor:
        h, w = self.height, self.width
        he = h + (h & 1)
        dst = self.alloc((he * 3 // 2, w)) if self.alloc is not None else None
        if dst is None:
            dst = torch.empty(he * 3 // 2, w, dtype=torch.uint8, device=self.device)
        src = torch.from_dlpack(f)
        if src.dim() == 3:
            src = src[..., 0]
        sh = src.shape[0] * 2 // 3                 # surface height the decoder reports
        dst[:h].copy_(src[:h, :w])
        dst[he:].copy_(src[sh:sh + he // 2, :w])
        return dst

    def close(self) -> None:
        self._dec = None
        self._bsf = None
