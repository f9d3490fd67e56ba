"""Gallery (SQLite, one-matmul search), the identify stage, the gallery CLI, and cross-camera
recognition with the demo embedder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidflow.batch import Batch, FrameInfo, Objects
from vidflow.demo_models.embedder import WEIGHTS
from vidflow.gallery import Gallery, Identify
from vidflow.gallery_cli import main as gallery_main


def unit(*v: float) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor([v], dtype=torch.float32), dim=1)


def test_enrol_search_remove_in_memory():
    g = Gallery()
    assert g.enrol("a", unit(1, 0, 0)) == 0
    assert g.enrol("b", torch.tensor([[0.0, 1, 0], [0, 0, 1]])) == 1  # two vectors for b
    assert g.enrol("a", [0.9, 0.1, 0]) == 0  # more for a
    assert g.names() == ["a", "b"] and g.counts() == {"a": 2, "b": 2} and g.dim == 3
    q = torch.cat([unit(0, 0.1, 1), unit(1, 0.05, 0), unit(0, 1, 0.2)])
    idx, sim = g.search(q, k=2)
    assert idx.tolist() == [[1, 0], [0, 1], [1, 0]]
    assert sim.shape == (3, 2) and sim[0, 0] > 0.99 and (sim[:, 0] >= sim[:, 1]).all()
    assert g.remove("a") and not g.remove("a")
    idx, sim = g.search(q, k=2)
    assert idx[:, 0].tolist() == [1, 1, 1] and idx[:, 1].tolist() == [-1, -1, -1]   # b keeps its id
    assert torch.isinf(sim[:, 1]).all()
    with pytest.raises(ValueError, match="D=4"):
        g.enrol("c", torch.ones(4))
    with pytest.raises(ValueError):
        g.enrol("", torch.ones(3))
    with pytest.raises(ValueError):
        g.enrol("z", torch.zeros(3))
    assert Gallery().search(q)[0].tolist() == [[-1], [-1], [-1]]


def test_database_survives_a_restart(tmp_path):
    db = tmp_path / "gallery.db"
    with Gallery(db) as g:
        g.enrol("alice", torch.randn(3, 8))
        g.enrol("bob", torch.randn(2, 8))
        g.enrol("carol", torch.randn(1, 8))
        g.remove("bob")
        q = torch.randn(5, 8)
        before = g.search(q, k=2)
    with Gallery(db) as g2:
        assert g2.names() == ["alice", "carol"] and g2.counts() == {"alice": 3, "carol": 1}
        after = g2.search(q, k=2)
    assert torch.equal(before[0], after[0])
    torch.testing.assert_close(before[1], after[1])


def _batch_with_vectors(v: torch.Tensor) -> Batch:
    n = v.shape[0]
    objs = Objects.create(frame_idx=torch.zeros(n), bbox=torch.tensor([[0, 0, 4, 4.0]]).repeat(n, 1))
    objs = objs.with_attrs(**{"embed.vector": v})
    return Batch(images=torch.zeros(1, 3, 8, 8, dtype=torch.uint8), frames=(FrameInfo(0, 0, 0.0),), objects=objs)


def test_identify_stage(tmp_path):
    g = Gallery()
    g.enrol("x", unit(1, 0))
    g.enrol("y", unit(0, 1))
    v = torch.cat([unit(1, 0.1), unit(0.1, 1), unit(1, 1), torch.zeros(1, 2)])
    out = Identify(g, threshold=0.8)(_batch_with_vectors(v))
    assert out.objects.attrs["identify.identity"].tolist() == [0, 1, -1, -1]  # (1,1): cos 0.71 < 0.8
    sim = out.objects.attrs["identify.similarity"]
    assert sim.dtype == torch.float32 and sim[3] == 0 and sim[0] > 0.99
    assert out.labels["identify"] == ("x", "y")
    with pytest.raises(ValueError, match="embed.vector"):
        Identify(g)(_batch_with_vectors(v).replace(objects=Objects.empty()))
    with pytest.raises(ValueError):
        Identify(g, threshold=2)
    db = tmp_path / "g.db"
    with Gallery(db) as g2:
        g2.enrol("x", unit(1, 0))
    st = Identify(str(db), name="who")  # a path, as in YAML
    assert st(_batch_with_vectors(unit(1, 0))).objects.attrs["who.identity"].tolist() == [0]
    st.close()


def test_cli_add_list_remove(tmp_path, capsys):
    db, npy = str(tmp_path / "g.db"), str(tmp_path / "v.npy")
    np.save(npy, np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32))
    assert gallery_main(["add", "alice", "--db", db, "--vectors", npy]) == 0
    assert gallery_main(["add", "bob", "--db", db, "--vectors", npy]) == 0
    assert gallery_main(["list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "alice\t2 vectors" in out and "2 identities" in out
    assert gallery_main(["remove", "alice", "--db", db]) == 0
    assert gallery_main(["remove", "alice", "--db", db]) == 1
    assert gallery_main(["add", "carol", "--db", db]) == 2  # nothing to add
    assert Gallery(db).names() == ["bob"]


def test_cli_add_image_with_the_demo_embedder(tmp_path):
    assert WEIGHTS.is_file(), "the demo embedder weights ship with vidflow (scripts/train_embedder.py)"
    import av

    png = str(tmp_path / "red.png")
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[:, :, 0] = 200
    with av.open(png, "w", format="image2") as c:
        st = c.add_stream("png", rate=1)
        st.width, st.height, st.pix_fmt = 60, 40, "rgb24"
        for p in st.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    db = str(tmp_path / "g.db")
    assert gallery_main(["add", "red", "--db", db, "--image", png]) == 0
    assert Gallery(db).counts() == {"red": 1} and Gallery(db).dim == 64


# -- cross-camera recognition with the demo embedder -----------------------------------------------
def other_camera(scene, seed: int):
    """The same objects (shape, size, colour) as ``scene``, other motion and background."""
    from vidflow.scenes import Scene

    cam = Scene(scene.width, scene.height, seed=seed, num_objects=len(scene.objects), fps=scene.fps)
    rng = np.random.default_rng(seed)
    objs = []
    for o in scene.objects:
        o = dict(o, x0=float(rng.uniform(0, scene.width - o["w"])), y0=float(rng.uniform(0, scene.height - o["h"])))
        speed, ang = rng.uniform(30, 300) * scene.width / 1920, rng.uniform(0, 2 * np.pi)
        o["vx"], o["vy"] = float(speed * np.cos(ang)), float(speed * np.sin(ang))
        objs.append(o)
    cam.objects = objs
    return cam


def scene_batch(scene, frames) -> tuple[Batch, list[int]]:
    """Rendered frames with their ground-truth boxes as objects (object_id = identity)."""
    imgs, fi, bb, ids = [], [], [], []
    for j, i in enumerate(frames):
        rgb, objs = scene.render(i)
        imgs.append(torch.from_numpy(rgb).permute(2, 0, 1))
        for o in objs:
            fi.append(j), bb.append(o["bbox"]), ids.append(o["object_id"])
    infos = tuple(FrameInfo(0, i, i / 30, 0, scene.width, scene.height) for i in frames)
    objs = Objects.create(frame_idx=torch.tensor(fi), bbox=torch.tensor(bb), object_id=torch.tensor(ids))
    return Batch(images=torch.stack(imgs), frames=infos, objects=objs), ids


def visible(boxes: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
    """Objects at most 30 % covered by boxes drawn later in the same frame (the scene draws in order)."""
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for k in range(len(boxes)):
        later = (frame_idx == frame_idx[k]) & (torch.arange(len(boxes)) > k)
        b = boxes[k]
        xs = b[0] + (torch.arange(8) + 0.5) / 8 * (b[2] - b[0])
        ys = b[1] + (torch.arange(8) + 0.5) / 8 * (b[3] - b[1])
        py, px = torch.meshgrid(ys, xs, indexing="ij")
        cov = torch.zeros_like(px, dtype=torch.bool)
        for o in boxes[later]:
            cov |= (px >= o[0]) & (px < o[2]) & (py >= o[1]) & (py < o[3])
        keep[k] = cov.float().mean() <= 0.3
    return keep


def test_identities_from_one_camera_are_recognised_in_another():
    assert WEIGHTS.is_file(), "the demo embedder weights ship with vidflow (scripts/train_embedder.py)"
    from vidflow.scenes import Scene
    from vidflow.stages.embed import Embedder

    emb = Embedder("demo")
    hits = total = 0
    for seed in (70, 71, 72, 73):  # scenes not used in training (1000+) nor in its evaluation (50-69)
        cam_a = Scene(640, 480, seed=seed)
        cam_b = other_camera(cam_a, seed=20_000 + seed)
        gallery = Gallery()
        ba, ids_a = scene_batch(cam_a, range(0, 30, 6))
        va = emb(ba).objects.attrs["embed.vector"]
        keep = visible(ba.objects.bbox, ba.objects.frame_idx)
        for oid in sorted(set(ids_a)):
            m = (torch.tensor(ids_a) == oid) & keep
            gallery.enrol(f"obj{oid}", va[m] if m.any() else va[torch.tensor(ids_a) == oid])
        bb, ids_b = scene_batch(cam_b, range(0, 60, 6))
        out = Identify(gallery, threshold=0.0)(emb(bb)).objects
        keep = visible(bb.objects.bbox, bb.objects.frame_idx)
        names = gallery.names()
        pred = [names[i] if i >= 0 else None for i in out.attrs["identify.identity"][keep].tolist()]
        truth = [f"obj{i}" for i in torch.tensor(ids_b)[keep].tolist()]
        hits += sum(p == t for p, t in zip(pred, truth))
        total += len(truth)
    top1 = hits / total
    print(f"cross-camera top-1 {top1:.3f} over {total} visible objects")
    assert top1 >= 0.9


def test_ids_are_stable_after_remove_and_restart(tmp_path):
    db = tmp_path / "g.db"
    with Gallery(db) as g:
        assert [g.enrol(n, unit(*v)) for n, v in (("a", (1, 0, 0)), ("b", (0, 1, 0)), ("c", (0, 0, 1)))] == [0, 1, 2]
        g.remove("b")
        assert g.ids() == {"a": 0, "c": 2} and g.labels() == ("a", "", "c")
        assert g.search(unit(0, 0, 1))[0].tolist() == [[2]]
    with Gallery(db) as g2:                     # reopened: same ids; a new name never reuses 1
        assert g2.ids() == {"a": 0, "c": 2}
        assert g2.enrol("d", unit(1, 1, 0)) == 3
        g2.remove("d")
    with Gallery(db) as g3:
        assert g3.enrol("e", unit(1, 0, 1)) == 4
    mem = Gallery()
    mem.enrol("x", unit(1, 0))
    mem.remove("x")
    assert mem.enrol("y", unit(0, 1)) == 1


def test_identities_of_a_class_match_only_that_class():
    g = Gallery()
    g.enrol("box7", unit(1, 0), class_id=0)
    g.enrol("disc3", unit(0.9, 0.1), class_id=1)
    g.enrol("anything", unit(0, 1))            # no class: matches every class
    v = torch.cat([unit(1, 0.05), unit(1, 0.05), unit(1, 0.05), unit(0.1, 1)])
    b = _batch_with_vectors(v)
    objs = b.objects.replace(class_id=torch.tensor([0, 1, 2, 2]))
    out = Identify(g, threshold=0.5)(b.replace(objects=objs))
    assert out.objects.attrs["identify.identity"].tolist() == [0, 1, -1, 2]   # only "anything" is a class 2 candidate
    loose = Identify(g, threshold=0.5, match_class=False)(b.replace(objects=objs))
    assert loose.objects.attrs["identify.identity"].tolist() == [0, 0, 0, 2]
    with pytest.raises(ValueError, match="class 0"):
        g.enrol("box7", unit(1, 0), class_id=1)


def test_outputs_carry_identity_names(tmp_path):
    from vidflow.sinks.jsonl import JsonlSink
    from vidflow.tables import read_jsonl

    g = Gallery()
    for n, v in (("alice", (1, 0)), ("bob", (0, 1)), ("carol", (1, 1))):
        g.enrol(n, unit(*v))
    g.remove("alice")
    out = Identify(g, threshold=0.9)(_batch_with_vectors(torch.cat([unit(0, 1), unit(1, 1), unit(1, 0)])))
    col = out.to_pandas()["identify.identity"]
    assert col.tolist()[:2] == ["bob", "carol"] and col.isna().tolist() == [False, False, True]
    with JsonlSink(tmp_path / "o.jsonl") as s:
        s.write(out)
    rec = __import__("json").loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert [o["attrs"]["identify.identity"] for o in rec["objects"]] == ["bob", "carol", None]
    col = read_jsonl(tmp_path / "o.jsonl")["identify.identity"]
    assert col.tolist()[:2] == ["bob", "carol"] and col.isna().tolist() == [False, False, True]


def test_cli_list_shows_stable_ids_and_creates_nothing(tmp_path, capsys):
    db, npy = str(tmp_path / "g.db"), str(tmp_path / "v.npy")
    assert gallery_main(["list", "--db", db]) == 1 and not (tmp_path / "g.db").exists()
    np.save(npy, np.ones((1, 4), np.float32))
    for name in ("a", "b", "c"):
        assert gallery_main(["add", name, "--db", db, "--vectors", npy]) == 0
    assert gallery_main(["remove", "b", "--db", db]) == 0
    capsys.readouterr()
    assert gallery_main(["list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "0\ta\t1 vector" in out and "2\tc\t1 vector" in out
