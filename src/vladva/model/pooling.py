"""Pooling a tower's final hidden states into one embedding: the summary token (the final hidden
state of each row's last real token, the paper's choice) or the mean over real tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """`(batch,)` index of the last position whose mask is 1, for left, right or no padding."""
    positions = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """`hidden` `(batch, seq, dim)`, `attention_mask` `(batch, seq)` -> `(batch, dim)`.

    Takes the last real (mask 1) token of each row, so mixed-length batches padded on either side
    give the same vectors as one-at-a-time inputs. L2-normalised unless `normalize=False`.
    """
    idx = last_token_index(attention_mask)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
    return F.normalize(pooled.float(), dim=-1) if normalize else pooled


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """`hidden` `(batch, seq, dim)`, `attention_mask` `(batch, seq)` -> `(batch, dim)`: the mean of
    each row's real (mask 1) positions, L2-normalised unless `normalize=False`. Padding on either
    side gives the same vectors as one-at-a-time inputs."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
    return F.normalize(pooled.float(), dim=-1) if normalize else pooled


POOLING = {"last": last_token_pool, "mean": mean_pool}


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """`(batch, seq)` positions counting only real tokens, so left padding does not shift them."""
    pos = attention_mask.long().cumsum(dim=1) - 1
    return pos.clamp(min=0)
