"""The BiT variant table: every architecture size, and the tiny ones the tests use.

One row per variant drives model building, checkpoint key layout, tests and docs. Width scales every
channel count (stem 64w, bottleneck mid 64w*2^b, out 256w*2^b); tiny variants use a fractional width so
that each GroupNorm still has 32 groups.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.errors import BitError

GN_GROUPS = 32
GN_EPS = 1e-5
WS_EPS = 1e-10
DEFAULT_CLASSES = 1000
# The reference code evaluates with a straight resize to 480; the paper uses 448 -> 384 and timm 448.
# None of the sources settles it, so it is a manifest value and a CLI flag with this default.
DEFAULT_RESOLUTION = 480


@dataclass(frozen=True)
class Variant:
    name: str
    units: tuple[int, int, int, int]
    width: float
    hub_handle: str | None = None
    npz_name: str | None = None
    tiny: bool = False

    @property
    def stem_channels(self) -> int:
        return int(64 * self.width)

    def mid_channels(self, block: int) -> int:
        """Bottleneck width of block 1..4."""
        return int(64 * self.width) * 2 ** (block - 1)

    def out_channels(self, block: int) -> int:
        return 4 * self.mid_channels(block)


def _hub(name: str) -> str:
    return f"google/bit/s-{name}/ilsvrc2012_classification/1"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("r50x1", (3, 4, 6, 3), 1, _hub("r50x1"), "BiT-S-R50x1.npz"),
        Variant("r50x3", (3, 4, 6, 3), 3, _hub("r50x3"), "BiT-S-R50x3.npz"),
        Variant("r101x1", (3, 4, 23, 3), 1, _hub("r101x1"), "BiT-S-R101x1.npz"),
        Variant("r101x3", (3, 4, 23, 3), 3, _hub("r101x3"), "BiT-S-R101x3.npz"),
        Variant("r152x4", (3, 8, 36, 3), 4, _hub("r152x4"), "BiT-S-R152x4.npz"),
        # Test variants: the same architecture and traps, one or two units per block, 32-channel stem.
        Variant("tiny", (1, 1, 1, 1), 0.5, tiny=True),
        Variant("tiny2", (2, 1, 2, 1), 0.5, tiny=True),
    ]
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name.lower()]
    except KeyError:
        raise BitError(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}") from None
