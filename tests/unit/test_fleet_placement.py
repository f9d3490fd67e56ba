"""vidflow.fleet.placement: capacity, least-loaded, no moves without need, loss, move-back."""

from __future__ import annotations

import pytest

from vidflow.fleet.placement import Change, WorkerSlot, loads, place


def _w(*ids: str, capacity: float = 4, dead: tuple[str, ...] = ()) -> list[WorkerSlot]:
    return [WorkerSlot(i, capacity, i not in dead) for i in ids]


def test_new_cameras_spread_to_the_least_loaded_worker():
    plan = place({f"c{i}": 1.0 for i in range(6)}, _w("w0", "w1"), {})
    assert loads(plan.assignment, {}) == {"w0": 3.0, "w1": 3.0}
    # alternating: each camera goes where the load ratio is lowest, ties by worker order
    assert [plan.assignment[f"c{i}"] for i in range(4)] == ["w0", "w1", "w0", "w1"]
    assert all(c.src is None for c in plan.changes) and plan.unplaced == ()


def test_capacity_and_cost_are_respected_and_overflow_waits():
    plan = place({"big": 3.0, "a": 1.0, "b": 1.0, "c": 1.0}, _w("w0", "w1", capacity=3), {})
    assert plan.assignment["big"] == "w0"
    assert [plan.assignment[c] for c in ("a", "b", "c")] == ["w1", "w1", "w1"]
    plan = place({"big": 3.0, "a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, _w("w0", "w1", capacity=3), {})
    assert plan.unplaced == ("d",) and "d" not in plan.assignment


def test_least_loaded_uses_the_ratio_to_capacity():
    workers = [WorkerSlot("small", 2), WorkerSlot("large", 8)]
    plan = place({"a": 1.0, "b": 1.0, "x": 1.0}, workers, {"a": "small", "b": "large"})
    assert plan.assignment["x"] == "large"         # 1/8 < 1/2


def test_running_cameras_are_not_moved_when_others_come_and_go():
    current = {"a": "w0", "b": "w0", "c": "w0", "d": "w1"}
    plan = place({"a": 1, "b": 1, "c": 1, "e": 1, "f": 1}, _w("w0", "w1"), current)
    for cam in ("a", "b", "c"):
        assert plan.assignment[cam] == "w0"
    assert Change("d", "w1", None) in plan.changes            # removed from the desired set
    assert plan.assignment["e"] == "w1" and plan.assignment["f"] == "w1"   # least loaded, w0 has 3
    assert plan.moves == ()


def test_over_capacity_is_tolerated_rather_than_shuffled():
    current = {"a": "w0", "b": "w0", "c": "w0"}
    plan = place({"a": 1, "b": 1, "c": 1}, _w("w0", "w1", capacity=2), current)
    assert plan.changes == () and plan.assignment == current


def test_a_lost_worker_s_cameras_are_re_placed_on_the_live_ones():
    current = {"a": "w0", "b": "w0", "c": "w1", "d": "w2"}
    plan = place({"a": 1, "b": 1, "c": 1, "d": 1}, _w("w0", "w1", "w2", dead=("w0",)), current)
    assert plan.assignment["c"] == "w1" and plan.assignment["d"] == "w2"
    assert {plan.assignment["a"], plan.assignment["b"]} == {"w1", "w2"}
    assert {c.camera for c in plan.moves} == {"a", "b"} and all(c.src == "w0" for c in plan.moves)
    # the dead worker is never sent a removal
    assert not [c for c in plan.changes if c.dst is None]


def test_no_live_worker_leaves_everything_unplaced():
    plan = place({"a": 1, "b": 1}, _w("w0", dead=("w0",)), {"a": "w0"})
    assert plan.assignment == {} and plan.unplaced == ("a", "b")


def test_move_back_only_when_asked_and_when_home_has_room():
    home = {"a": "w0", "b": "w0", "c": "w1"}
    current = {"a": "w1", "b": "w1", "c": "w1"}          # w0 was lost, came back empty
    stay = place({"a": 1, "b": 1, "c": 1}, _w("w0", "w1"), current, home=home)
    assert stay.changes == () and stay.assignment == current
    back = place({"a": 1, "b": 1, "c": 1}, _w("w0", "w1"), current, home=home, move_back=True)
    assert back.assignment == {"a": "w0", "b": "w0", "c": "w1"}
    assert set(back.moves) == {Change("a", "w1", "w0"), Change("b", "w1", "w0")}
    tight = place({"a": 1, "b": 1, "c": 1}, [WorkerSlot("w0", 1), WorkerSlot("w1", 4)], current, home=home,
                  move_back=True)
    assert [c.camera for c in tight.moves] == ["a"]       # room for one only


def test_home_is_the_first_worker_and_is_forgotten_with_the_camera():
    plan = place({"a": 1}, _w("w0", "w1"), {})
    assert plan.home == {"a": "w0"}
    again = place({"a": 1}, _w("w0", "w1", dead=("w0",)), plan.assignment, home=plan.home)
    assert again.assignment == {"a": "w1"} and again.home == {"a": "w0"}
    gone = place({}, _w("w0", "w1"), again.assignment, home=again.home)
    assert gone.home == {} and gone.changes == (Change("a", "w1", None),)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="capacity"):
        WorkerSlot("w0", 0)
    with pytest.raises(ValueError, match="cost"):
        place({"a": 0}, _w("w0"), {})
    with pytest.raises(ValueError, match="duplicate"):
        place({}, [WorkerSlot("w0", 1), WorkerSlot("w0", 2)], {})
