"""Detection on CUDA with the user-style YOLO11n models (.models/yolo11n_shapes.{onnx,torchscript};
carry [".models"]) on a generated 1080p H.264 clip, plus letterbox vs OpenCV and NMS vs
torchvision where those are installed (they are on the GPU machine).

Figures are printed as ``FIGURE {...}`` lines (run with ``-s``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo
from vidflow.ops.geometry import letterbox
from vidflow.ops.nms import batched_nms_pure, box_iou, nms_pure
from vidflow.stages.detect import Detector

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]
MODELS = [ROOT / ".models", ROOT / "models", Path("/work/shared/models")]
FRAMES, BATCH = 48, 16


def _model(ext: str) -> str:
    for d in MODELS:
        p = d / f"yolo11n_shapes.{ext}"
        if p.exists():
            return str(p)
    pytest.skip(f"yolo11n_shapes.{ext} not found (carry .models)")


def _figure(**kw) -> None:
    print("FIGURE " + json.dumps(kw))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    av = pytest.importorskip("av")
    from vidflow.scenes import Scene, load_ground_truth, make_clip
    c = make_clip(tmp_path_factory.mktemp("clip") / "shapes1080.mp4", width=1920, height=1080,
                  frames=FRAMES, seed=11)
    with av.open(c.path) as f:
        rgb = [torch.from_numpy(fr.to_ndarray(format="rgb24")) for fr in f.decode(video=0)]
    images = torch.stack(rgb).permute(0, 3, 1, 2).contiguous().cuda()
    return images, load_ground_truth(c.gt_path), _visibility(Scene(1920, 1080, seed=11), FRAMES)


def _visibility(scene, frames: int) -> list[torch.Tensor]:
    """Per frame, per ground-truth object: the fraction of its shape's area that is visible in the
    rendered frame (pixels of its colour, +-6 per channel, inside its box; occluders drawn later
    cover it). Shape areas: box w*h, disc pi/4*w*h, triangle w*h/2."""
    out = []
    for i in range(frames):
        rgb, objs = scene.render(i)
        img = torch.from_numpy(rgb).int()
        vis = []
        for o in objs:
            x1, y1, x2, y2 = (int(round(v)) for v in o["bbox"])
            crop = img[y1:y2, x1:x2]
            hit = ((crop - torch.tensor(o["color"])).abs() <= 6).all(-1).sum().item()
            w, h = x2 - x1, y2 - y1
            area = {0: w * h, 1: 3.14159 / 4 * w * h, 2: w * h / 2}[o["class_id"]]
            vis.append(min(hit / max(area, 1.0), 1.0))
        out.append(torch.tensor(vis))
    return out


def _run(det: Detector, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per frame: (boxes [n,4], class [n], conf [n]) on the CPU."""
    out = []
    for s in range(0, len(images), BATCH):
        imgs = images[s:s + BATCH]
        b = Batch(images=imgs, frames=tuple(FrameInfo(0, s + i, 0.0, width=1920, height=1080)
                                            for i in range(len(imgs))))
        r = det(b)
        assert r.objects.device.type == "cuda"
        o = r.objects.to("cpu")
        for i in range(len(imgs)):
            m = o.frame_idx == i
            out.append((o.bbox[m], o.class_id[m], o.confidence[m]))
    return out


def _match(a, b, thr: float) -> tuple[int, int, int]:
    """Greedy one-to-one matching (by a's confidence) of same-class boxes at IoU >= thr.
    Returns (matched, len a, len b) summed over frames."""
    m = na = nb = 0
    for (ba, ca, sa), (bb, cb, _) in zip(a, b):
        na, nb = na + len(ba), nb + len(bb)
        if not len(ba) or not len(bb):
            continue
        iou = box_iou(ba, bb)
        iou[ca[:, None] != cb[None, :]] = -1
        used = torch.zeros(len(bb), dtype=torch.bool)
        for i in torch.argsort(sa, descending=True).tolist():
            v, j = iou[i].masked_fill(used, -1).max(0)
            if v >= thr:
                used[j] = True
                m += 1
    return m, na, nb


def _gt(gt_rows):
    return [(torch.tensor([o["bbox"] for o in r["objects"]], dtype=torch.float32).reshape(-1, 4),
             torch.tensor([o["class_id"] for o in r["objects"]], dtype=torch.int64),
             torch.ones(len(r["objects"]))) for r in gt_rows]


@pytest.fixture(scope="module")
def results(clip):
    images = clip[0]
    onnx, ts = _model("onnx"), _model("torchscript")
    return {
        "onnx32": _run(Detector(onnx), images),
        "ts32": _run(Detector(ts), images),
        "ts16": _run(Detector(ts, half=True), images),
        "onnx16": _run(Detector(onnx, half=True), images),
    }


def test_onnx_and_torchscript_agree(results):
    m, na, nb = _match(results["onnx32"], results["ts32"], 0.95)
    rate = m / max(na, nb)
    _figure(test="onnx_vs_torchscript", matched=m, onnx=na, torchscript=nb, rate=round(rate, 4))
    assert rate >= 0.99


@pytest.mark.parametrize("which", ["ts", "onnx"])
def test_fp16_agrees_with_fp32(results, which):
    m, na, nb = _match(results[f"{which}16"], results[f"{which}32"], 0.95)
    rate = m / max(na, nb)
    _figure(test=f"{which}_fp16_vs_fp32", matched=m, fp16=na, fp32=nb, rate=round(rate, 4))
    assert rate >= 0.98


def _recall_at_precision(dets, gt, visible, min_precision: float = 0.9, min_visible: float = 0.5):
    """Sweep the confidence threshold; return (best recall with precision >= min_precision, the
    threshold, recall vs all objects at that threshold). Objects less than ``min_visible`` visible
    are "ignore" objects: detections matched to them count neither way, and they are not in
    the recall denominator (as COCO's crowd/ignore regions)."""
    rows = []  # (conf, kind) kind: 1 TP, 0 FP, -1 ignored (matched a hidden object)
    n_vis = n_all = 0
    tp_all = []
    for (bd, cd, sd), (bg, cg, _), vis in zip(dets, gt, visible):
        hidden = vis < min_visible
        n_vis += int((~hidden).sum())
        n_all += len(bg)
        used = torch.zeros(len(bg), dtype=torch.bool)
        iou = box_iou(bd, bg) if len(bd) and len(bg) else torch.zeros(len(bd), len(bg))
        if iou.numel():
            iou[cd[:, None] != cg[None, :]] = -1
        for i in torch.argsort(sd, descending=True).tolist():
            kind = 0
            if len(bg):
                v, j = iou[i].masked_fill(used, -1).max(0)
                if v >= 0.5:
                    used[j] = True
                    kind = -1 if hidden[j] else 1
            rows.append((float(sd[i]), kind))
            tp_all.append((float(sd[i]), kind != 0))
    rows.sort(key=lambda r: -r[0])
    tp = fp = 0
    best = (0.0, 1.0)
    for conf, kind in rows:
        tp += kind == 1
        fp += kind == 0
        if tp + fp and tp / (tp + fp) >= min_precision and tp / n_vis > best[0]:
            best = (tp / n_vis, conf)
    rec_all = sum(1 for c, ok in tp_all if ok and c >= best[1]) / max(n_all, 1)
    return best[0], best[1], rec_all


@pytest.fixture(scope="module")
def low_conf(clip):
    images = clip[0]
    return {"onnx32": _run(Detector(_model("onnx"), conf=0.05), images),
            "ts16": _run(Detector(_model("torchscript"), conf=0.05, half=True), images),
            "demo": _run(Detector("demo", conf=0.05), images)}


@pytest.mark.parametrize("which", ["onnx32", "ts16"])
def test_recall_precision_vs_ground_truth(low_conf, results, clip, which):
    gt = _gt(clip[1])
    recall, thr, rec_all = _recall_at_precision(low_conf[which], gt, clip[2])
    src = results["ts32" if which == "ts16" else which]
    m, nd, ng = _match(src, gt, 0.5)
    hidden = sum(int((v < 0.5).sum()) for v in clip[2])
    _figure(test="vs_ground_truth", model=which, recall_at_p90_visible=round(recall, 4), conf=round(thr, 3),
            recall_all_objects_same_conf=round(rec_all, 4), objects=ng, hidden_objects=hidden,
            at_conf_025={"recall_all": round(m / ng, 4), "precision": round(m / max(nd, 1), 4)})
    assert recall >= 0.95


def test_demo_detector_on_1080p(low_conf, clip):
    recall, thr, rec_all = _recall_at_precision(low_conf["demo"], _gt(clip[1]), clip[2])
    _figure(test="demo_vs_ground_truth_1080p", recall_at_p90_visible=round(recall, 4), conf=round(thr, 3),
            recall_all_objects_same_conf=round(rec_all, 4))
    assert recall >= 0.85


def test_onnx_torch_conversion_matches_onnxruntime():
    from vidflow.engines.onnx import OnnxEngine
    path = _model("onnx")
    x = torch.rand(2, 3, 640, 640, generator=torch.Generator().manual_seed(0))
    ref = OnnxEngine(path, device="cpu")(x)["output0"]
    eng = OnnxEngine(path, device="cuda")
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32
    try:
        got = eng(x.cuda())["output0"]
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    got_tf32 = eng(x.cuda())["output0"]
    assert got.is_cuda
    err = (got.cpu() - ref).abs().max().item()
    err_tf32 = (got_tf32.cpu() - ref).abs().max().item()
    _figure(test="onnx_cuda_vs_ort_cpu", backend=eng.backend, max_abs_err_fp32=err,
            max_abs_err_tf32_default=err_tf32, output_max=ref.abs().max().item())
    assert err < 1e-2


def test_letterbox_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(1)
    worst = []
    for (w, h), size in [((1920, 1080), (640, 640)), ((640, 480), (640, 640)), ((333, 517), (320, 256)),
                         ((1280, 720), (1280, 1280))]:
        img = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=g)
        img[:, :, h // 3:h // 2] = 200  # flat areas and edges as well as noise
        out, p = letterbox(img.cuda(), size)
        for k in range(2):
            a = img[k].permute(1, 2, 0).numpy()
            r = cv2.resize(a, p.new_size, interpolation=cv2.INTER_LINEAR)
            pw, ph = size[0] - p.new_size[0], size[1] - p.new_size[1]
            ref = cv2.copyMakeBorder(r, p.top, ph - p.top, p.left, pw - p.left, cv2.BORDER_CONSTANT,
                                     value=(114, 114, 114))
            d = np.abs(out[k].permute(1, 2, 0).cpu().numpy().astype(int) - ref.astype(int))
            worst.append((float((d <= 1).mean()), int(d.max())))
    _figure(test="letterbox_vs_opencv", within_1lsb=[x for x, _ in worst], max_diff=[x for _, x in worst])
    assert all(frac >= 0.99 for frac, _ in worst)


def test_nms_matches_torchvision():
    tv = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(2)
    cases = ties = ties_agree = tv_cuda = tv_cuda_agree = 0
    for dev in ("cpu", "cuda"):
        for n in (1, 5, 50, 300, 2000):
            for grid, score_ties in ((False, False), (True, False), (True, True)):
                xy = torch.rand(n, 2, generator=g) * 100
                wh = torch.rand(n, 2, generator=g) * 40 + 1
                sc = torch.rand(n, generator=g)
                if grid:  # integer coordinates: many exactly equal IoUs, IoU exactly at thresholds
                    xy, wh = xy.round(), wh.round().clamp(min=1)
                if score_ties:  # torchvision does not define an order among equal scores
                    sc = (sc * 4).round() / 4
                b = torch.cat([xy, xy + wh], 1).to(dev)
                sc = sc.to(dev)
                cls = torch.randint(0, 3, (n,), generator=g).to(dev)
                exact = not score_ties
                for t in (0.3, 0.5, 0.7):
                    # the reference is torchvision's CPU kernel (float IoU vs a double threshold);
                    # its CUDA kernel compares against a float threshold, so at IoU exactly equal to
                    # float32(t) the two torchvision kernels disagree with each other
                    ref = tv.ops.nms(b.cpu(), sc.cpu(), t)
                    same = torch.equal(nms_pure(b, sc, t).cpu(), ref)
                    if dev == "cuda":
                        tv_cuda_agree += int(torch.equal(tv.ops.nms(b, sc, t).cpu(), ref))
                        tv_cuda += 1
                    # per class: torchvision's nms run class by class (its batched_nms uses a
                    # coordinate-offset trick that can differ by float rounding, not by definition)
                    got = set(batched_nms_pure(b, sc, cls, t).tolist())
                    want = set()
                    bc, sc_c, cls_c = b.cpu(), sc.cpu(), cls.cpu()
                    for c in range(3):
                        idx = (cls_c == c).nonzero().flatten()
                        want |= set(idx[tv.ops.nms(bc[idx], sc_c[idx], t)].tolist())
                    if exact:
                        assert same, (dev, n, grid, t)
                        assert got == want, (dev, n, grid, t)
                        cases += 1
                    else:
                        ties_agree += int(same and got == want)
                        ties += 1
    _figure(test="nms_vs_torchvision", exact_cases=cases, score_tie_cases_agreeing=f"{ties_agree}/{ties}",
            torchvision_cuda_vs_cpu_agreeing=f"{tv_cuda_agree}/{tv_cuda}")


def test_cuda_graphs_channels_last_and_buckets_match_eager(cuda_device):
    """The default CUDA engine (channels_last + one CUDA graph per batch bucket) gives the eager
    model's outputs at odd batch sizes, and its outputs survive the next call (copies, not the
    graph's own buffers)."""
    from vidflow.engines import load_engine

    path = _model("torchscript")
    eager = load_engine(path, device=cuda_device, half=True, channels_last=False, cuda_graphs=False,
                        batch_buckets=False)
    fast = load_engine(path, device=cuda_device, half=True)
    assert fast.cuda_graphs and fast.channels_last and fast.batch_buckets
    torch.manual_seed(0)
    kept = []
    for b in (5, 61, 64, 5):
        x = torch.rand(b, 3, 640, 640, device=cuda_device, dtype=torch.float16)
        a, f = eager(x)["output0"].float(), fast(x)["output0"].float()
        assert f.shape == a.shape
        torch.testing.assert_close(f[:, :4], a[:, :4], atol=1.0, rtol=0.01)      # boxes, input pixels
        torch.testing.assert_close(f[:, 4:], a[:, 4:], atol=0.02, rtol=0.0)      # class scores
        kept.append((a, f))
    assert fast.cuda_graphs, "capture fell back to eager"
    assert sorted(k[0] for k in fast._graphs) == [8, 64]                          # noqa: SLF001
    a0, f0 = kept[0]
    torch.testing.assert_close(f0[:, 4:], a0[:, 4:], atol=0.02, rtol=0.0)        # not overwritten since
