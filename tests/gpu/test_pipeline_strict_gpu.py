"""Pipeline(strict_device=True) on the GPU: a stage that copies frames to the host fails, naming
itself and the shape; the normal detector pipeline (NVDEC -> muxer -> detect -> track) passes."""

import pytest

from vidflow import FileSource, Muxer, Pipeline
from vidflow.errors import StageError
from vidflow.scenes import make_clip
from vidflow.stages.detect import Detector
from vidflow.stages.track import Tracker
from vidflow.testing import MemorySink

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("strict") / "cam.mp4", width=640, height=360, frames=24, fps=30, seed=1)


def test_a_stage_copying_frames_to_the_host_fails(clip, cuda_device):
    def leaky(batch):
        batch.images.cpu()
        return batch

    leaky.name = "leaky"
    pipe = Pipeline([FileSource(clip.path)], Muxer(batch_size=4, size=(640, 384)), [leaky], [MemorySink()],
                    device=cuda_device, strict_device=True)
    with pytest.raises(StageError, match=r"stage 'leaky'.*image-sized tensor \[4, 3, 384, 640\]"):
        pipe.run()


@pytest.mark.parametrize("overlap", [False, True])
def test_the_detector_pipeline_passes(clip, cuda_device, overlap):
    pipe = Pipeline([FileSource(clip.path)], Muxer(batch_size=4, size=(640, 384)),
                    [Detector("demo", half=True), Tracker()], [MemorySink(keep_images=False)],
                    device=cuda_device, strict_device=True, overlap=overlap)
    assert pipe.run().frames == clip.frames
