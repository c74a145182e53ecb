"""Machine descriptions shipped with memfs (YAML). `default.yaml` is the embedded default."""
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def builtin(name: str) -> Path:
    """Path of a shipped machine description: 'default' -> config/default.yaml."""
    return CONFIG_DIR / f"{name}.yaml"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
