"""Instance masks only where needed: a segment ``Detector(masks="auto")`` builds them when a later
stage or sink reads them (``stages.base.reads_masks``) or the caller iterates the batches, and not
otherwise; explicit ``masks=True/False`` wins."""

from __future__ import annotations

import pytest
import torch

from vidflow.engines.fake import FakeEngine
from vidflow.ops.draw import Annotate
from vidflow.pipeline import Pipeline
from vidflow.sinks.jsonl import JsonlSink
from vidflow.stages.base import reads_masks
from vidflow.stages.classify import Classifier
from vidflow.stages.detect import Detector
from vidflow.stages.track import Tracker
from vidflow.testing import FakeSource


def _seg_engine() -> FakeEngine:
    """One object per image (a 20x20 box at the input's centre) whose mask logits are > 0 everywhere."""
    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        out = torch.zeros(b, 4 + 1 + 2, 4)
        out[:, :4, 0] = torch.tensor([32.0, 32.0, 20.0, 20.0])
        out[:, 4, 0] = 0.9
        out[:, 5, 0] = 5.0
        protos = torch.zeros(b, 2, 16, 16)
        protos[:, 0] = 1.0
        return {"output0": out, "protos": protos}
    return FakeEngine(fn=fn, input_size=(64, 64))


class Probe:
    """A sink that says whether it reads masks, and notes what it was given."""

    def __init__(self, reads: bool) -> None:
        self.reads_masks = reads
        self.seen: list[tuple[int, bool]] = []        # (objects, masks present) per batch

    def write(self, batch) -> None:
        self.seen.append((len(batch.objects), batch.objects.masks is not None))

    def close(self) -> None:
        pass


def _run(stages, sinks, *, iterate: bool = False) -> list[tuple[int, bool]]:
    pipe = Pipeline([FakeSource(3)], stages=stages, sinks=sinks, device="cpu")
    if iterate:
        got = [(len(b.objects), b.objects.masks is not None) for b in pipe]
    else:
        pipe.run()
        got = []
    probe = next(s for s in sinks if isinstance(s, Probe))
    assert probe.seen and all(n > 0 for n, _ in probe.seen)
    assert not got or got == probe.seen
    return probe.seen


def _masks_built(stages, sinks, **kw) -> bool:
    seen = _run(stages, sinks, **kw)
    assert len({m for _, m in seen}) == 1
    return seen[0][1]


def test_no_masks_when_nothing_reads_them():
    assert not _masks_built([Detector(_seg_engine(), head="segment")], [Probe(False)])


def test_a_sink_that_reads_masks_turns_them_on(tmp_path):
    assert _masks_built([Detector(_seg_engine(), head="segment")], [Probe(False), Probe(True)])
    assert _masks_built([Detector(_seg_engine(), head="segment")], [Probe(False), JsonlSink(tmp_path / "o.jsonl")])


def test_later_stages_decide_by_what_they_declare():
    det = lambda: Detector(_seg_engine(), head="segment")  # noqa: E731
    assert not _masks_built([det(), Tracker(min_hits=1)], [Probe(False)])
    assert not _masks_built([det(), Annotate(masks=False)], [Probe(False)])
    assert _masks_built([det(), Annotate()], [Probe(False)])
    assert _masks_built([det(), lambda b: b], [Probe(False)])                 # a user's stage: may read them
    model = lambda x: torch.zeros(x.shape[0], 2)                               # noqa: E731
    assert not _masks_built([det(), Classifier(model)], [Probe(False)])
    assert _masks_built([det(), Classifier(model, crop="mask")], [Probe(False)])
    # a stage before the detector does not count: the detector replaces the objects
    assert not _masks_built([Annotate(), det()], [Probe(False)])


def test_explicit_settings_win():
    assert _masks_built([Detector(_seg_engine(), head="segment", masks=True)], [Probe(False)])
    assert not _masks_built([Detector(_seg_engine(), head="segment", masks=False)], [Probe(True)])
    assert not _masks_built([Detector(_seg_engine(), head="segment", masks=False)], [Probe(False)], iterate=True)


def test_iterating_the_pipeline_reads_the_batches_so_masks_are_on():
    assert _masks_built([Detector(_seg_engine(), head="segment")], [Probe(False)], iterate=True)


def test_adding_a_mask_reading_sink_turns_them_on():
    det = Detector(_seg_engine(), head="segment")
    pipe = Pipeline([FakeSource(2)], stages=[det], sinks=[Probe(False)], device="cpu")
    assert not det.makes_masks
    probe = Probe(True)
    pipe.add_sink(probe)
    assert det.makes_masks
    pipe.run()
    assert probe.seen and all(m for _, m in probe.seen)


def test_on_its_own_the_detector_builds_masks_and_checks_the_setting():
    from vidflow.batch import Batch, FrameInfo

    b = Batch(torch.zeros(1, 3, 48, 64, dtype=torch.uint8), (FrameInfo(0, 0, 0.0, width=64, height=48),))
    objs = Detector(_seg_engine(), head="segment")(b).objects
    assert len(objs) == 1 and objs.masks is not None and int(objs.masks.area()[0]) > 0
    with pytest.raises(ValueError, match="masks"):
        Detector(_seg_engine(), masks="sometimes")  # type: ignore[arg-type]


def test_reads_masks_of_undeclared_and_host_frame_sinks(tmp_path):
    class HostSink:
        host_masks = False

    assert reads_masks(object()) and not reads_masks(HostSink())
    assert reads_masks(JsonlSink(tmp_path / "a.jsonl"))
    assert not reads_masks(JsonlSink(tmp_path / "b.jsonl", format="events"))


@pytest.mark.parametrize("reader_first", [True, False])
def test_a_detector_shared_by_two_pipelines_builds_masks_when_either_reads_them(reader_first):
    det = Detector(_seg_engine(), head="segment", conf=0.5, masks="auto")
    reads, skips = Probe(True), Probe(False)
    order = [reads, skips] if reader_first else [skips, reads]
    pipes = [Pipeline([FakeSource(3)], stages=[det], sinks=[p], device="cpu") for p in order]
    assert det.makes_masks                       # the one that reads wins, whichever was built last
    for pipe in pipes:
        pipe.run()
    assert all(m for _, m in reads.seen) and all(m for _, m in skips.seen)
    alone = Detector(_seg_engine(), head="segment", conf=0.5, masks="auto")
    Pipeline([FakeSource(3)], stages=[alone], sinks=[Probe(False)], device="cpu")
    assert not alone.makes_masks


def test_a_pipeline_gone_has_no_say():
    import gc
    det = Detector(_seg_engine(), head="segment", conf=0.5, masks="auto")
    keep = Pipeline([FakeSource(3)], stages=[det], sinks=[Probe(False)], device="cpu")
    gone = Pipeline([FakeSource(3)], stages=[det], sinks=[Probe(True)], device="cpu")
    assert det.makes_masks
    del gone
    gc.collect()
    assert not det.makes_masks and keep is not None
