"""vidflow's own demo models (trained by ``scripts/train_detector.py`` on ``vidflow.scenes``).

``load_demo(device=...) -> (DemoDetector, info)``: the weights ship in
``vidflow/models/demo_detector.pt`` (a plain ``state_dict``, read with
``torch.load(weights_only=True)``) and ``demo_detector.json`` (labels, input size, format).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch

from .detector import DemoDetector

__all__ = ["DemoDetector", "load_demo", "DEMO_WEIGHTS", "DEMO_INFO"]

DEMO_WEIGHTS = "demo_detector.pt"
DEMO_INFO = "demo_detector.json"


def load_demo(*, device: torch.device | str = "cpu") -> tuple[DemoDetector, dict[str, Any]]:
    """The trained demo detector (eval mode, on ``device``) and its info dict
    ``{"labels": [...], "input_size": [W, H], "format": "yolov8", ...}``."""
    root = resources.files("vidflow") / "models"
    info = json.loads((root / DEMO_INFO).read_text())
    with resources.as_file(root / DEMO_WEIGHTS) as p:
        state = torch.load(p, map_location="cpu", weights_only=True)
    model = DemoDetector(num_classes=len(info["labels"]), width=int(info.get("width", 1)))
    model.load_state_dict(state)
    return model.to(device).eval(), info
