"""Real OpenStack clients (python-glanceclient CLI and library, openstacksdk) driven
against a base URL, from the gateway's test process.

The clients live in the Glance virtualenv; each run is a subprocess of
client_flow.py there, which prints a JSON report of every step.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from testing.glance import GlanceEnv

SCRIPT = Path(__file__).resolve().with_name("client_flow.py")
CLIENTS = ("glanceclient-cli", "glanceclient-lib", "openstacksdk")
FLOW_TIMEOUT_S = 1800


def run_client_flow(
    env: GlanceEnv,
    client: str,
    base_url: str,
    *,
    size_mib: int,
    workdir: Path,
    prop: str = "flow_prop",
    forbidden_attribute: str = "min_ram",
    forbidden_value: Any = 512,
) -> dict[str, Any]:
    """Create an image, upload ``size_mib`` MiB, download it, rename it and set a
    custom property, remove the property, try to set ``forbidden_attribute``, delete.

    Returns the report: ``sha256``/``size`` of the uploaded data and ``steps``, each
    ``{"ok": bool, "status"?, "message"?, "image"?: the image read back over HTTP}``.
    """
    argv = [
        str(env.python),
        "-I",
        str(SCRIPT),
        "--client",
        client,
        "--url",
        base_url,
        "--size-mib",
        str(size_mib),
        "--workdir",
        str(workdir),
        "--property",
        prop,
        "--forbidden-attribute",
        forbidden_attribute,
        "--forbidden-value",
        json.dumps(forbidden_value),
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=FLOW_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{client} flow crashed ({result.returncode}):\n{result.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report
