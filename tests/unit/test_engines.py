"""Engines: nn.Module, TorchScript (config.txt metadata), ONNX on onnxruntime and through the
ONNX->torch converter (checked against onnxruntime), FakeEngine, load_engine dispatch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from vidflow.engines import load_engine
from vidflow.engines.base import as_outputs, labels_from, parse_metadata, size_from
from vidflow.engines.fake import FakeEngine
from vidflow.engines.torch import TorchEngine

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

YOLO = [Path(__file__).resolve().parents[2] / ".models" / "yolo11n_shapes.onnx",
        Path("/work/shared/models/yolo11n_shapes.onnx")]


class Many(nn.Module):
    """Exercises many converter ops: Conv (stride, groups, asymmetric pad), BN, SiLU, MaxPool,
    AvgPool, Resize, Concat, Split, Slice, Softmax, Reshape/Transpose, MatMul, Gemm, Flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, 1, 1, groups=4)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = nn.functional.silu(self.bn(self.c1(nn.functional.pad(x, (0, 1, 1, 0)))))
        y = self.c2(y)
        a, b = y.chunk(2, 1)
        p = self.pool(y)
        up = nn.functional.interpolate(p, scale_factor=2.0, mode="nearest")
        z = torch.cat([a, b, up[:, :, : a.shape[2], : a.shape[3]]], 1)         # [B,16,h,w]
        att = torch.softmax(z.flatten(2).transpose(1, 2) @ z.flatten(2), -1)  # [B,hw,hw]
        z = (z.flatten(2) @ att).reshape(z.shape)
        g = nn.functional.adaptive_avg_pool2d(z[:, :8], 1).flatten(1)
        return self.fc(g).sigmoid(), z[:, 1:7:2] * 0.5 - nn.functional.avg_pool2d(z[:, 1:7:2], 2, 2).mean()


@pytest.fixture(scope="module")
def many_onnx(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "many.onnx"
    torch.onnx.export(Many().eval(), (torch.rand(1, 3, 64, 64),), str(p), input_names=["images"],
                      output_names=["cls", "feat"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}})
    return str(p)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 3, 96, 64)])
def test_onnx_converter_matches_onnxruntime(many_onnx, shape):
    from vidflow.engines.onnx import OnnxEngine

    ort_e = OnnxEngine(many_onnx)
    tor_e = OnnxEngine(many_onnx, backend="torch")
    assert (ort_e.backend, tor_e.backend) == ("onnxruntime", "torch")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    a, b = ort_e(x), tor_e(x)
    assert list(a) == list(b) == ["cls", "feat"]
    for k in a:
        assert a[k].shape == b[k].shape
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


def test_onnxruntime_off_the_cpu_is_refused_naming_the_converter(many_onnx):
    # the onnxruntime-gpu binding never ran anywhere: refused before anything loads, on any machine
    from vidflow.engines.onnx import OnnxEngine

    with pytest.raises(ValueError, match=r"backend='onnxruntime' on cuda is not available.*backend='torch'"):
        OnnxEngine(many_onnx, device="cuda", backend="onnxruntime")


def test_onnx_converter_on_yolo11n():
    path = next((p for p in YOLO if p.exists()), None)
    if path is None:
        pytest.skip("yolo11n_shapes.onnx not present")
    from vidflow.engines.onnx import OnnxEngine

    x = torch.rand(1, 3, 320, 416, generator=torch.Generator().manual_seed(1))  # dynamic H/W
    a = OnnxEngine(path)(x)["output0"]
    b = OnnxEngine(path, backend="torch")(x)["output0"]
    assert a.shape == b.shape == (1, 7, 40 * 52 + 20 * 26 + 10 * 13)
    assert (a - b).abs().max() < 1e-2          # box rows are in pixels (up to ~416)
    assert (a[:, 4:] - b[:, 4:]).abs().max() < 1e-4


def test_converter_rejects_unknown_ops(tmp_path):
    from onnx import TensorProto, helper

    from vidflow.engines.onnx_torch import OnnxTorchModule

    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,jk->ik")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    with pytest.raises(NotImplementedError, match="Einsum"):
        OnnxTorchModule(helper.make_model(g))


def test_torch_engine_outputs_and_half_ignored_on_cpu():
    class Two(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), [x[:, :1] * 2]

    e = TorchEngine(Two(), half=True)
    assert e.input_dtype == torch.float32   # float16 only on CUDA
    out = e(torch.ones(2, 3, 4, 4, dtype=torch.uint8))
    assert list(out) == ["output0", "output1"] and out["output1"].shape == (2, 1, 4, 4)
    assert e.output_names == ("output0", "output1")
    assert as_outputs({"a": torch.zeros(1), "b": 3}) == {"a": torch.zeros(1)}


def test_torchscript_metadata_and_no_pickle(tmp_path):
    m = torch.jit.script(nn.Conv2d(3, 4, 1))
    p = tmp_path / "m.torchscript"
    torch.jit.save(m, str(p), _extra_files={"config.txt": '{"names": {"0": "a", "1": "b"}, "imgsz": [48, 64]}'})
    e = load_engine(str(p))
    assert isinstance(e, TorchEngine) and e.labels == ("a", "b") and e.input_size == (64, 48)
    assert e(torch.rand(5, 3, 8, 8))["output0"].shape == (5, 4, 8, 8)
    pickled = tmp_path / "full.pt"
    torch.save(nn.Conv2d(3, 4, 1), str(pickled))          # a pickled module: refused, never unpickled
    with pytest.raises(ValueError, match="TorchScript"):
        load_engine(str(pickled))


def test_load_engine_dispatch_and_errors(tmp_path, many_onnx):
    assert load_engine(many_onnx).__class__.__name__ == "OnnxEngine"
    fake = FakeEngine()
    assert load_engine(fake) is fake
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="format"):
        load_engine(str(odd))
    with pytest.raises(ValueError, match="onnx, torchscript"):
        load_engine(many_onnx, format="tensorrt")
    with pytest.raises(FileNotFoundError):
        load_engine(os.path.join(str(tmp_path), "missing.onnx"))


def test_metadata_parsing_is_literal_only():
    meta = parse_metadata({"names": "{0: 'box', 1: 'disc'}", "imgsz": "[480, 640]", "evil": "__import__('os')"})
    assert labels_from(meta) == ("box", "disc") and size_from(meta) == (640, 480)
    assert meta["evil"] == "__import__('os')"             # left as text, never evaluated
    assert labels_from({"names": {0: "a", 2: "c"}}) == ("a", "class1", "c")
    assert size_from({"imgsz": 320}) == (320, 320) and size_from({}) is None
    assert parse_metadata(b'{"task": "detect"}') == {"task": "detect"}


def test_fake_engine_is_deterministic():
    e = FakeEngine(outputs={"out": (2, 3)})
    x = torch.rand(4, 3, 8, 8)
    a, b = e(x)["out"], e(x)["out"]
    assert a.shape == (4, 2, 3) and torch.equal(a, b)
    assert torch.allclose(a[:, 0, 0], x.reshape(4, -1).mean(1))
    assert e.calls == [(4, 3, 8, 8)] * 2


def test_batch_buckets_pad_and_slice_back():
    from vidflow.engines.torch import TorchEngine, bucket

    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 16, 17, 61, 64)] == [1, 2, 4, 8, 8, 16, 16, 24, 64, 64]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    plain = TorchEngine(net, batch_buckets=False)
    padded = TorchEngine(net, batch_buckets=True, channels_last=True)
    seen = []
    net.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    for n in (1, 3, 5, 11):
        x = torch.rand(n, 3, 16, 12)
        a, b = plain(x), padded(x)
        assert b["output0"].shape[0] == n
        torch.testing.assert_close(a["output0"], b["output0"], rtol=1e-5, atol=1e-5)
    assert seen == [1, 1, 3, 4, 5, 8, 11, 16]


def test_onnx_conv_transpose_converts_to_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    from vidflow.engines.onnx import OnnxEngine

    class Up(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.ConvTranspose2d(3, 4, 2, stride=2)
            self.b = torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2)

        def forward(self, x):
            return self.b(self.a(x))

    p = tmp_path / "up.onnx"
    torch.onnx.export(Up().eval(), (torch.rand(1, 3, 8, 8),), str(p), input_names=["images"],
                      output_names=["output0"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "b"}, "output0": {0: "b"}})
    x = torch.rand(2, 3, 8, 8)
    ref = OnnxEngine(p, device="cpu")(x)["output0"]
    got = OnnxEngine(p, device="cpu", backend="torch")(x)["output0"]
    assert got.shape == (2, 2, 32, 32)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


class _Flat(nn.Module):      # a head whose size is baked in: a trace runs at its export size only
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 24, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_trace_at_another_size_names_the_export_size(tmp_path):
    p = tmp_path / "t.torchscript"
    torch.jit.save(torch.jit.trace(_Flat().eval(), torch.rand(1, 3, 16, 24)), str(p),
                   _extra_files={"config.txt": '{"imgsz": [16, 24]}'})
    e = load_engine(str(p))
    assert e(torch.rand(2, 3, 16, 24))["output0"].shape == (2, 2)         # its own size runs
    with pytest.raises(ValueError, match=r"t\.torchscript: .*exported at 24x16.*got 32x16.*ONNX"):
        e(torch.rand(2, 3, 16, 32))
    bare = tmp_path / "bare.torchscript"                                   # no size in its metadata:
    torch.jit.save(torch.jit.trace(_Flat().eval(), torch.rand(1, 3, 16, 24)), str(bare))
    with pytest.raises(RuntimeError):                                      # the error is torch's own
        load_engine(str(bare))(torch.rand(2, 3, 16, 32))
