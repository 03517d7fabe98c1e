"""Helpers for tests and examples: tiny random LVLMs built from configs and tiny manifests."""

from vladva.testing.tiny_models import (
    build_tiny_idefics3,
    build_tiny_llava,
    build_tiny_qwen2_vl,
    write_tiny_manifest,
)

__all__ = ["build_tiny_idefics3", "build_tiny_llava", "build_tiny_qwen2_vl", "write_tiny_manifest"]
