"""Silence what transformers and peft print while vladva loads or writes a local folder and is not
the user's business: transformers' "Loading weights" / "Writing model shards" bars (vladva reads
only local folders, so there is no download to follow) and peft's FutureWarning about transformers'
deprecated `is_gradient_checkpointing` (a peft / transformers version matter the user cannot act
on). Errors and every other warning pass through unchanged.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Inside: no transformers progress bars, no `is_gradient_checkpointing` FutureWarning."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
