"""Where the tests find the project: the checkout, its configs and the tests' own fixtures."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
TINY = CONFIGS / "tiny_asr.yaml"
FIXTURES = REPO / "tests" / "fixtures"
