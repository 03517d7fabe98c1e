"""Loading the recipe's config: packaged presets (`--quick`), a user YAML, then `key=value` overrides."""

from __future__ import annotations

from pathlib import Path

import yaml

from vladva.base.recipe import PretrainConfig
from vladva.config import ConfigError, _build

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
QUICK_PRESET = CONFIG_DIR / "pretrain_quick.yaml"


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys")
    return data


def load_pretrain_config(config: Path | str | None = None, overrides: list[str] | None = None, quick: bool = False,
                         device: str | None = None) -> PretrainConfig:
    """Defaults, then the quick preset (tiny budget, seconds) if `quick`, then `config`, then
    `overrides`, then `device`. Unknown keys raise `ConfigError` naming the key and file."""
    from vladva.config import parse_overrides

    cfg = PretrainConfig()
    if quick:
        cfg = _build(PretrainConfig, _read_yaml(QUICK_PRESET), "", str(QUICK_PRESET), base=cfg)
    if config is not None:
        cfg = _build(PretrainConfig, _read_yaml(Path(config)), "", str(config), base=cfg)
    if overrides:
        cfg = _build(PretrainConfig, parse_overrides(overrides), "", "command line", base=cfg)
    if device is not None:
        cfg = _build(PretrainConfig, {"device": device}, "", "--device", base=cfg)
    return cfg
