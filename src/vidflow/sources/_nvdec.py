"""NVDEC decoding (PyNvVideoCodec), fed with packets from the demux layer (:mod:`._demux`).

``NvdecDecoder(stream, device)`` follows the :class:`~vidflow.sources.decoders.Decoder`
protocol: ``decode(packet)`` / ``flush()`` return ``Decoded`` NV12 pictures ``[H*3//2, W]`` on
CUDA. PyNvVideoCodec's low-level decoder (``CreateDecoder``; ``PacketData`` pointing at each
packet's bytes; ``Decode`` returning the pictures ready, as DLPack surfaces) takes Annex B
elementary streams: H.264/HEVC packets from MP4/MKV go through ``*_mp4toannexb`` (packets of
MPEG-TS / RTSP already are Annex B and pass through unchanged).

Surfaces: NVDEC recycles its output surfaces, so each picture is copied (device to device, on the
decoder's own CUDA stream, synchronised before it is handed on) into a fresh tensor or a slot the
caller's ``alloc`` gives (a decode process's ring). Nothing downstream ever reads a decoder
surface, which is what makes re-creating a decoder safe at any time (a reconnect, a new SPS with
a larger size): the old one is dropped only after its last copy finished, and frames already
delivered live in memory the decoder never owned (DeepStream's CUDA error 700 on a resolution
change comes from freeing surfaces downstream still reads).

Low latency (``low_latency=True``, live sources by default): by default NVDEC holds a few
pictures back for display reordering (PyNvVideoCodec's ``DisplayDecodeLatencyType.NATIVE``:
"a latency of 4 frames"), which at 30 fps adds ~100 ms to every live frame. For a stream without
B-frames (PyAV's ``has_b_frames`` is 0, as cameras encode) the decoder is created with
``latency=DisplayDecodeLatencyType.LOW`` ("a latency of 0 frames, output in display order") and
each packet is flagged ``VideoPacketFlag.ENDOFPICTURE`` (a demuxed MPEG-TS/RTSP/MP4 packet is one
whole picture), so ``Decode`` returns the picture of the packet it was given. A stream with
B-frames, or a PyNvVideoCodec without the enum, decodes as before (``self.low_latency`` says
which mode runs).

The picture size is read from each surface, not from the container: a stream whose SPS changes
to a smaller size is reconfigured inside NVDEC and its frames come out at the new size; a larger
one raises in ``Decode`` and the source re-creates the decoder and restarts at a keyframe.
"""

from __future__ import annotations

import heapq
import logging
import threading
from typing import Any

import numpy as np
import torch

from .decoders import Decoded, PacketRejected

__all__ = ["NVDEC_CODECS", "nvdec_info", "nvdec_unsupported", "NvdecDecoder", "import_nvc", "low_latency_mode"]

log = logging.getLogger(__name__)

# PyAV codec name -> PyNvVideoCodec cudaVideoCodec member
NVDEC_CODECS = {"h264": "H264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "vp8": "VP8",
                "mpeg2video": "MPEG2"}
_ANNEXB = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
_NV12_OK = ("yuv420p", "yuvj420p", "nv12")

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


def low_latency_mode(nvc: Any, stream: Any) -> tuple[Any, Any] | None:
    """``(DisplayDecodeLatencyType.LOW, VideoPacketFlag.ENDOFPICTURE)`` when this PyNvVideoCodec
    has them and the PyAV ``stream`` has no B-frames (``has_b_frames`` 0: nothing to reorder);
    else ``None`` (decode with NVDEC's native reordering delay)."""
    lat, flag = getattr(nvc, "DisplayDecodeLatencyType", None), getattr(nvc, "VideoPacketFlag", None)
    low, eop = getattr(lat, "LOW", None), getattr(flag, "ENDOFPICTURE", None)
    if low is None or eop is None:
        return None
    try:
        b_frames = int(stream.codec_context.has_b_frames or 0)
    except (AttributeError, TypeError, ValueError):
        return None
    return (low, eop) if b_frames == 0 else None


class NvdecDecoder:
    """NVDEC decoding of one PyAV video ``stream`` on CUDA ``device`` (see the module text).

    ``decode(packet)`` returns the pictures ready, in presentation order, each with the packet
    timestamps in ascending order (the order NVDEC displays them) converted to seconds; ``flush()``
    the rest at the end of the stream (NVDEC's parser then starts afresh: the decoder can take
    the next pass of a looped file, ``rebind``). ``alloc((rows, width))``: where a picture is
    written (None: a fresh tensor). ``low_latency``: see the module text."""

    name = "nvdec"

    def __init__(self, stream: Any, device: torch.device, *, max_size: tuple[int, int] | None = None,
                 low_latency: bool = False) -> None:
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
        self._tb = 0.0
        self.flushed = False                 # True after flush(): the parser starts afresh
        self._bind(stream)
        self.alloc: Any = None
        kw = dict(gpuid=self.device.index, codec=getattr(nvc.cudaVideoCodec, NVDEC_CODECS[cc.name]),
                  cudacontext=_stream_context(self._stream), cudastream=self._stream.cuda_stream,
                  usedevicememory=True)
        if max_size is not None:            # room for a larger SPS later (re-created after one)
            kw.update(maxwidth=int(max_size[0]), maxheight=int(max_size[1]))
        self.low_latency = False
        self._eop: Any = None                # VideoPacketFlag.ENDOFPICTURE in low-latency mode
        mode = low_latency_mode(nvc, stream) if low_latency else None
        if mode is not None:
            kw["latency"], self._eop = mode
            self.low_latency = True
        with torch.cuda.device(self.device):
            self._dec = nvc.CreateDecoder(**kw)

    def _bind(self, stream: Any) -> None:
        from av.bitstream import BitStreamFilterContext
        bsf = _ANNEXB.get(self.codec)
        self._bsf = BitStreamFilterContext(bsf, stream) if bsf else None
        self._tb = float(stream.time_base) if stream.time_base else 0.0
        self._pts.clear()

    def rebind(self, stream: Any) -> bool:
        """Go on with a new PyAV ``stream`` (the same file re-opened to loop) after ``flush()``:
        the decoder and its surfaces are kept (creating them at
        every pass of a short looped clip cost a fifth of a decode process's CPU). ``False``
        when the stream needs another decoder (codec, size, a format NVDEC cannot take) or the
        last one was not flushed (a connection that broke off: its decoder is re-created)."""
        cc = stream.codec_context
        if (not self.flushed or cc.name != self.codec
                or (int(cc.width or 0), int(cc.height or 0)) != (self.width, self.height)
                or nvdec_unsupported(stream) or self._dec is None):
            return False
        self._bind(stream)
        return True

    def decode(self, packet: Any) -> list[Decoded]:
        if packet is None or packet.size == 0:
            return []
        self.flushed = False
        return self._run(self._bsf.filter(packet) if self._bsf is not None else [packet], flush=False)

    def flush(self) -> list[Decoded]:
        if self._dec is None:
            return []
        tail = self._bsf.filter(None) if self._bsf is not None else []
        try:
            return self._run(tail, flush=True)
        except PacketRejected:
            return []
        finally:
            self.flushed = True

    def _run(self, pkts: list[Any], *, flush: bool) -> list[Decoded]:
        out: list[Decoded] = []
        with torch.cuda.stream(self._stream):
            try:
                for p in pkts:
                    if p.pts is not None:
                        heapq.heappush(self._pts, int(p.pts))
                    out += self._submit(p)
                if flush:
                    out += self._submit(None)          # empty packet = CUVID end of stream: flush
            except PacketRejected:
                raise
            except Exception as e:  # noqa: BLE001 - PyNvVideoCodec raises plain RuntimeErrors
                raise PacketRejected(f"NVDEC: {type(e).__name__}: {e}") from None
            if out:
                self._stream.synchronize()             # copies done before anyone reads them
        return out

    def _submit(self, packet: Any | None) -> list[Decoded]:
        pd = self._nvc.PacketData()
        # the packet's own bytes, no copy (PyAV packets export a buffer); kept alive by ``buf``
        buf = np.frombuffer(packet, dtype=np.uint8) if packet is not None and packet.size else None
        pd.bsl_data = int(buf.ctypes.data) if buf is not None else 0
        pd.bsl = int(buf.size) if buf is not None else 0
        if self._eop is not None and buf is not None:
            pd.decode_flag = self._eop              # one whole picture: decode and output it now
        frames = self._dec.Decode(pd)
        res = []
        for f in frames:
            pts = heapq.heappop(self._pts) if self._pts else None
            data, w, h = self._copy(f)
            res.append(Decoded(pts * self._tb if pts is not None and self._tb else None, data, "nv12", w, h))
        del buf
        return res

    def _copy(self, f: Any) -> tuple[torch.Tensor, int, int]:
        src = torch.from_dlpack(f)
        if src.dim() == 3:
            src = src[..., 0]
        w = int(src.shape[1])
        h = int(src.shape[0]) * 2 // 3                 # the size NVDEC decoded (after any reconfigure)
        self.width, self.height = w, h
        he = h + (h & 1)
        dst = self.alloc((he * 3 // 2, w)) if self.alloc is not None else None
        if dst is None:
            dst = torch.empty(he * 3 // 2, w, dtype=torch.uint8, device=self.device)
        dst[:h].copy_(src[:h, :w])
        dst[he:].copy_(src[h:h + he // 2, :w])
        return dst, w, h

    def close(self) -> None:
        """Drop the decoder. Safe at any time: every picture it produced is a copy, finished."""
        if self._dec is not None:
            self._stream.synchronize()
        self._dec = None
        self._bsf = None
