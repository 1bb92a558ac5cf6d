"""Small helpers shared by the eval scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_json(path: Path | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` (parents created) and say so; no-op for None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
