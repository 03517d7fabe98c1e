"""Loading the recipe's config: packaged presets (`--quick`), a user YAML, then `key=value` overrides."""

from __future__ import annotations

from pathlib import Path

from vladva.config import build_config, read_config_file
from vladva.toyworld.base.recipe import PretrainConfig

# The packaged recipes: src/vladva/configs (this file is src/vladva/toyworld/base/presets.py).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
QUICK_PRESET = CONFIG_DIR / "pretrain_quick.yaml"


def load_pretrain_config(
    config: Path | str | None = None, overrides: list[str] | None = None, quick: bool = False, device: str | None = None
) -> PretrainConfig:
    """Defaults, then the quick preset (tiny budget, seconds) if `quick`, then `config`, then
    `overrides`, then `device`. Unknown keys raise `ConfigError` naming the key and file."""
    from vladva.config import parse_overrides

    cfg = PretrainConfig()
    if quick:
        cfg = build_config(PretrainConfig, read_config_file(QUICK_PRESET), str(QUICK_PRESET), base=cfg)
    if config is not None:
        cfg = build_config(PretrainConfig, read_config_file(Path(config)), str(config), base=cfg)
    if overrides:
        cfg = build_config(PretrainConfig, parse_overrides(overrides), "command line", base=cfg)
    if device is not None:
        cfg = build_config(PretrainConfig, {"device": device}, "--device", base=cfg)
    return cfg
