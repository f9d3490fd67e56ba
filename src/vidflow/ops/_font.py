"""An embedded 8x8 bitmap font (printable ASCII, U+0020..U+007E) and its glyph atlas.

The glyph data is ``font8x8_basic`` by Daniel Hepper, after Marcel Sondaar's font8_8 and the
IBM PC VGA ROM fonts -- all released into the public domain. Each glyph is 8 bytes, one per row
from the top; bit 0 of a byte is the leftmost pixel.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["GLYPH_W", "GLYPH_H", "FIRST", "LAST", "REPLACEMENT", "atlas", "encode"]

GLYPH_W = 8
GLYPH_H = 8
FIRST = 0x20
LAST = 0x7E
REPLACEMENT = ord("?")

# one 16-hex-digit string per glyph, U+0020 .. U+007E
_GLYPHS = """
0000000000000000 183C3C1818001800 3636000000000000 36367F367F363600 0C3E031E301F0C00 006333180C666300
1C361C6E3B336E00 0606030000000000 180C0606060C1800 060C1818180C0600 00663CFF3C660000 000C0C3F0C0C0000
00000000000C0C06 0000003F00000000 00000000000C0C00 6030180C06030100 3E63737B6F673E00 0C0E0C0C0C0C3F00
1E33301C06333F00 1E33301C30331E00 383C36337F307800 3F031F3030331E00 1C06031F33331E00 3F3330180C0C0C00
1E33331E33331E00 1E33333E30180E00 000C0C00000C0C00 000C0C00000C0C06 180C0603060C1800 00003F00003F0000
060C1830180C0600 1E3330180C000C00 3E637B7B7B031E00 0C1E33333F333300 3F66663E66663F00 3C66030303663C00
1F36666666361F00 7F46161E16467F00 7F46161E16060F00 3C66030373667C00 3333333F33333300 1E0C0C0C0C0C1E00
7830303033331E00 6766361E36666700 0F06060646667F00 63777F7F6B636300 63676F7B73636300 1C36636363361C00
3F66663E06060F00 1E3333333B1E3800 3F66663E36666700 1E33070E38331E00 3F2D0C0C0C0C1E00 3333333333333F00
33333333331E0C00 6363636B7F776300 6363361C1C366300 3333331E0C0C1E00 7F6331184C667F00 1E06060606061E00
03060C1830604000 1E18181818181E00 081C366300000000 00000000000000FF 0C0C180000000000 00001E303E336E00
0706063E66663B00 00001E3303331E00 3830303E33336E00 00001E333F031E00 1C36060F06060F00 00006E33333E301F
0706366E66666700 0C000E0C0C0C1E00 300030303033331E 070666361E366700 0E0C0C0C0C0C1E00 0000337F7F6B6300
00001F3333333300 00001E3333331E00 00003B66663E060F 00006E33333E3078 00003B6E66060F00 00003E031E301F00
080C3E0C0C2C1800 0000333333336E00 00003333331E0C00 0000636B7F7F3600 000063361C366300 00003333333E301F
00003F190C263F00 380C0C070C0C3800 1818180018181800 070C0C380C0C0700 6E3B000000000000
""".split()
assert len(_GLYPHS) == LAST - FIRST + 1


@functools.lru_cache(maxsize=1)
def _base_atlas() -> torch.Tensor:
    """``[G, 8, 8]`` bool on the CPU, G = 95 glyphs (index = code point - 0x20)."""
    rows = torch.tensor([list(bytes.fromhex(g)) for g in _GLYPHS], dtype=torch.int64)  # [G,8]
    bits = torch.arange(GLYPH_W, dtype=torch.int64)
    return (rows[:, :, None] >> bits) & 1 == 1


@functools.lru_cache(maxsize=16)
def atlas(scale: int, device: torch.device) -> torch.Tensor:
    """The glyph atlas rendered once per ``(scale, device)``: ``[G, 8*scale, 8*scale]`` bool."""
    if scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale}")
    a = _base_atlas().repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return a.to(device)


def encode(texts: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Glyph indices of ``texts``: ``[N, L]`` int64 on the CPU, -1 past each string's end.

    Characters outside printable ASCII become ``?``.
    """
    n = len(texts)
    width = max((len(t) for t in texts), default=0)
    out = torch.full((n, max(width, 1)), -1, dtype=torch.int64)
    if n and width:
        raw = b"".join(t.encode("ascii", "replace").ljust(width, b"\0") for t in texts)
        codes = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(n, width).to(torch.int64)
        valid = codes != 0
        printable = (codes >= FIRST) & (codes <= LAST)
        idx = torch.where(printable, codes, torch.full_like(codes, REPLACEMENT)) - FIRST
        out[:, :width] = torch.where(valid, idx, torch.full_like(idx, -1))
    return out
