"""Both reading directions and both strands of a right-padded batch, for the non-causal models (Caduceus).

Symbols as in mambadna/model.py.

Reversal keeps padding in place. Batches are right-padded (real tokens first). Flipping a padded row would put
its padding first, and a reverse-direction scan would then run over padding before it reached the real bases,
changing every state it carries into them. So the reversal here reverses each row's first `length` positions and
leaves the padding where it is: [a b c PAD PAD] -> [c b a PAD PAD], and the reverse complement of that row is
[c' b' a' PAD PAD] (`mambadna.tokenizer.reverse_complement` of the whole padded row would give the left-padded
[PAD PAD c' b' a']). The reversal is its own inverse, and on unpadded rows it is `flip`.

Two strands (RCPS). Caduceus's RC-equivariant model carries 2d channels, the forward strand in the first d and
the reverse strand, reverse-complemented, in the last d; every layer (embedding, norms, mixers) acts on the two
halves separately with the same weights, and only the LM head adds them. That is the same function as running
the one trunk over the batch and over its reverse complements, stacked along the batch, and combining at the
output, which is how mambadna runs it: the block code does not change, and the two strands are one (2b, l) batch.
After the trunk the reverse strand is realigned to the forward strand's positions (`Strands.join`), so position t
of the result holds both strands' view of the same base pair.
"""

from __future__ import annotations

import torch

from mambadna.tokenizer import NucleotideTokenizer, reverse_complement

# Pooling a strand that runs the other way: its last real token is the forward strand's first, and vice versa.
MIRRORED_POOLING = {"mean": "mean", "last": "cls", "cls": "last"}


def complement_ids(vocab_size: int, device=None) -> torch.Tensor:
    """(V,) the id of each id's complement: A<->T, C<->G; N, special ids and vocabulary padding map to themselves."""
    n = NucleotideTokenizer.vocab_size
    table = torch.arange(vocab_size, device=device)
    table[:n] = reverse_complement(torch.arange(n, device=device)).flip(-1)  # undo the reversal, keep the complement
    return table


class Reverser:
    """Reverses the real positions of every row of a right-padded batch, along dim 1 of (b, l, ...) tensors."""

    def __init__(self, mask: torch.Tensor):
        b, l = mask.shape  # (b, l) bool, right-padded (see mambadna.model.check_mask)
        lengths = mask.sum(-1, keepdim=True)  # (b, 1)
        self.shape = (b, l)
        self.index = None  # plain flip when no row is padded
        if bool((lengths < l).any()):
            t = torch.arange(l, device=mask.device)[None, :]  # (1, l)
            self.index = torch.where(t < lengths, lengths - 1 - t, t)  # (b, l): position t of the reversed row

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[:2]) != self.shape:
            raise ValueError(f"Reverser built for (b, l) = {self.shape} got a tensor of shape {tuple(x.shape)}")
        if self.index is None:
            return x.flip(1)
        index = self.index.view(*self.shape, *([1] * (x.dim() - 2))).expand_as(x)
        return x.gather(1, index)


class Strands:
    """The batch's real-token mask, and what the non-causal models do with it: reverse rows (bidirectional) and
    stack each row's reverse complement under the batch, then join the strands after the trunk (rc_equivariant)."""

    def __init__(self, mask: torch.Tensor, rc_equivariant: bool, vocab_size: int):
        self.batch_size = mask.shape[0]
        self.rc_equivariant = rc_equivariant
        self.reverse = Reverser(mask)  # on the batch as given
        # the reverse-complement rows have the same lengths, so the stacked batch reverses with the mask repeated
        self.trunk_reverse = Reverser(torch.cat([mask, mask])) if rc_equivariant else self.reverse
        self.complement = complement_ids(vocab_size, mask.device) if rc_equivariant else None

    def stack(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (b, l) -> the trunk's batch: (2b, l) with the reverse complements below for rc_equivariant."""
        if not self.rc_equivariant:
            return input_ids
        rc = self.complement[self.reverse(input_ids)]  # (b, l), padding left at the end
        return torch.cat([input_ids, rc.to(input_ids.dtype)])  # (2b, l)

    def join(self, residual: torch.Tensor) -> torch.Tensor:
        """The trunk's output (2b, l, d) -> (b, l, 2d): [..., :d] the forward strand, [..., d:] the reverse strand
        at the same base pair (its position l_row - 1 - t, channels as they are)."""
        if not self.rc_equivariant:
            return residual
        forward, rev = residual.split(self.batch_size)  # (b, l, d) each
        return torch.cat([forward, self.reverse(rev)], dim=-1)  # (b, l, 2d)
