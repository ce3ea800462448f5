"""Where the shipped checkpoint lives (torch-free, so commands can name it cheaply)."""
from pathlib import Path

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "rexnet150-bm7"
