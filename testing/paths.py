"""Places in the repository the suites read."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = REPO / "config" / "gateway.toml"
README = REPO / "README.md"
