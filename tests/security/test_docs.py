"""service/SECURITY.md's code runs as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from service import WebSocketService
from tests.security.helpers import rsa_keys

DOC = Path(__file__).resolve().parents[2] / "service" / "SECURITY.md"


def test_every_python_block_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        namespace: dict[str, Any] = {"PUBLIC_KEY_PEM": rsa_keys()[1]}
        exec(compile(block, str(DOC), "exec"), namespace)
        service = namespace["websocket_service"]
        assert isinstance(service, WebSocketService)
        assert service.origin_policy is not None and service.authorize is not None
