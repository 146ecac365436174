"""The best pair Recall@k a split allows: identical captions cannot be told apart.

Pairs whose captions are identical (several structures of one paper, all captioned by its title)
have identical text embeddings, so in text → structure their ``s`` queries share one ranking of
the structures, and their ``s`` partners take ``s`` distinct ranks in it: at most ``min(k, s)`` of
them can be in the top ``k``. The ceiling is therefore

    ceiling(R@k) = mean over pair queries of min(k, s_i) / s_i,

where ``s_i`` is the number of pairs of the split with query ``i``'s exact caption (itself
included). It is the exact maximum (reached when each caption's structures are its top ``s``
results), and also the expected pair Recall@k of such a ranking when ties among the ``s``
partners are broken at random. The same bound holds structure → text: the ``s`` identical texts
tie and the tie rule puts them in index order, so at most ``min(k, s)`` partners rank ``<= k``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor


def identical_caption_sizes(captions: Sequence[str]) -> Tensor:
    """``[N]`` int64: for each pair, how many pairs of the split have exactly its caption."""
    counts = Counter(captions)
    return torch.tensor([counts[c] for c in captions], dtype=torch.long)


def pair_recall_ceiling(captions: Sequence[str], ks: Sequence[int]) -> dict[str, float]:
    """``pair_R@k`` -> the best achievable pair Recall@k of the split's ``captions [N]``."""
    sizes = identical_caption_sizes(captions).double()
    return {f"pair_R@{k}": (sizes.clamp(max=k) / sizes).mean().item() for k in ks}
