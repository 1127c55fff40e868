"""Tokenizers: DNA text <-> integer ids.

Both tokenizers share the special ids PAD=0, BOS=1 (cls), EOS=2 (sep), MASK=3, UNK=4 (docs/ARCHITECTURE.md).
Encoding is one table lookup over the raw bytes (`np.frombuffer` + a 256-entry table), so a whole chromosome
encodes at memory speed; there is no Python loop per base anywhere in this file.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

PAD_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID = 0, 1, 2, 3, 4
NUM_SPECIAL = 5
SPECIAL_TOKENS = {PAD_ID: "[PAD]", BOS_ID: "[BOS]", EOS_ID: "[EOS]", MASK_ID: "[MASK]", UNK_ID: "[UNK]"}
# A target id that is never scored (padding, positions with no next base): PyTorch's cross-entropy default.
IGNORE_INDEX = -100

NUCLEOTIDES = "ACGTN"
A_ID, C_ID, G_ID, T_ID, N_ID = 5, 6, 7, 8, 9
IUPAC_AMBIGUITY = "RYKMSWBDHV"
_INVALID = -1


def _is_tensor(value) -> bool:
    # no torch import to ask: the settings layer reads tokenizer names before torch is loaded (the CLI answers fast)
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _as_bytes(seq: str | bytes | bytearray | memoryview, ascii_only: bool, lenient: bool) -> bytes:
    """Raw bytes of `seq`; one byte per character so error positions are character positions."""
    if isinstance(seq, (bytes, bytearray, memoryview)):
        return bytes(seq)
    if not isinstance(seq, str):
        raise TypeError(f"expected str or bytes, got {type(seq).__name__}")
    if not ascii_only:
        return seq.encode("utf-8")
    try:
        return seq.encode("ascii")
    except UnicodeEncodeError as err:
        if lenient:
            # "?" is not a nucleotide, so each non-ASCII character becomes exactly one UNK at its own position.
            return seq.encode("ascii", errors="replace")
        raise ValueError(f"invalid nucleotide character {seq[err.start]!r} at position {err.start}") from None


class _Tokenizer:
    """Shared special ids, batching and (de)serialisation; subclasses provide `encode` and `decode`."""

    name: str
    pad_id, bos_id, eos_id, mask_id, unk_id = PAD_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID
    special_ids = (PAD_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID)
    vocab_size: int
    # [first, end) of ids a language model may sample: the real symbols, no specials, no vocab padding.
    sampleable_ids: tuple[int, int]

    def batch_encode(
        self,
        seqs: Sequence[str | bytes],
        add_special_tokens: bool = False,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Right-padded batch. `max_length` truncates each sequence (specials included, EOS kept); the batch is
        as long as its longest member, rounded up to `pad_to_multiple_of`."""
        if isinstance(seqs, (str, bytes)) or len(seqs) == 0:
            raise ValueError("batch_encode needs a non-empty list of sequences")
        n_special = 2 if add_special_tokens else 0
        if max_length is not None and max_length <= n_special:
            raise ValueError(f"max_length must exceed the {n_special} special tokens added, got {max_length}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive int, got {pad_to_multiple_of}")
        rows = []
        for i, seq in enumerate(seqs):
            try:
                ids = self.encode(seq)
            except ValueError as err:
                raise ValueError(f"sequence {i} of the batch: {err}") from None
            if max_length is not None:
                ids = ids[: max_length - n_special]
            rows.append(self._with_specials(ids) if add_special_tokens else ids)
        length = max(len(r) for r in rows)
        if pad_to_multiple_of is not None:
            length = _round_up(max(length, 1), pad_to_multiple_of)
        import torch

        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
            attention_mask[i, : len(ids)] = True
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _with_specials(self, ids: np.ndarray) -> np.ndarray:
        return np.concatenate(([self.bos_id], ids, [self.eos_id])).astype(np.int64)

    def _check_ids(self, ids) -> np.ndarray:
        arr = ids.detach().cpu().numpy() if _is_tensor(ids) else np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"decode expects a 1-D sequence of ids, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(np.flatnonzero((arr < 0) | (arr >= self.vocab_size))[0])
            raise ValueError(f"id {int(arr[bad])} at position {bad} is outside the vocabulary [0, {self.vocab_size})")
        return arr.astype(np.int64, copy=False)

    def to_dict(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> "_Tokenizer":
        if d.get("name") != cls.name:
            raise ValueError(f"{cls.__name__}.from_dict got a tokenizer named {d.get('name')!r}, expected {cls.name!r}")
        return tokenizer_from_name(**d)


class NucleotideTokenizer(_Tokenizer):
    """Single-base tokens: A=5, C=6, G=7, T=8, N=9; vocab 16 (10 real ids padded to a multiple of 8).

    Lowercase (soft-masked repeats in UCSC/Ensembl FASTA) maps to the same ids; `return_soft_mask=True` returns
    which positions were lowercase. IUPAC ambiguity codes become N. Anything else - including U, gaps and
    whitespace - raises ValueError naming the character and its 0-based position, or becomes UNK when lenient.
    """

    name = "nucleotide"
    vocab_size = 16
    sampleable_ids = (A_ID, N_ID + 1)

    _ENCODE = np.full(256, _INVALID, dtype=np.int64)
    for _i, _c in enumerate(NUCLEOTIDES):
        _ENCODE[ord(_c)] = _ENCODE[ord(_c.lower())] = A_ID + _i
    for _c in IUPAC_AMBIGUITY:
        _ENCODE[ord(_c)] = _ENCODE[ord(_c.lower())] = N_ID
    _LOWER = np.zeros(256, dtype=bool)
    _LOWER[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)] = True
    _DECODE = np.frombuffer(b"?????" + NUCLEOTIDES.encode() + b"??????", dtype=np.uint8)
    # Complement on ids: A<->T, C<->G, N and every special / padding id map to themselves.
    _COMPLEMENT = np.arange(16, dtype=np.int64)
    _COMPLEMENT[[A_ID, C_ID, G_ID, T_ID]] = [T_ID, G_ID, C_ID, A_ID]
    del _i, _c

    def __init__(self, lenient: bool = False):
        self.lenient = bool(lenient)

    def encode(
        self, seq: str | bytes, add_special_tokens: bool = False, return_soft_mask: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        raw = np.frombuffer(_as_bytes(seq, ascii_only=True, lenient=self.lenient), dtype=np.uint8)  # (l,)
        ids = self._ENCODE[raw]  # (l,) int64, -1 where invalid
        invalid = ids == _INVALID
        if invalid.any():
            if not self.lenient:
                pos = int(np.flatnonzero(invalid)[0])
                raise ValueError(f"invalid nucleotide character {chr(raw[pos])!r} at position {pos}")
            ids[invalid] = UNK_ID
        soft = self._LOWER[raw] if return_soft_mask else None
        if add_special_tokens:
            ids = self._with_specials(ids)  # (l+2,)
            if soft is not None:
                soft = np.concatenate(([False], soft, [False]))
        return (ids, soft) if return_soft_mask else ids

    def decode(self, ids, skip_special_tokens: bool = True, soft_mask=None) -> str:
        """Ids -> bases. Specials are dropped (or written as "[PAD]" etc.); `soft_mask` lowercases bases."""
        arr = self._check_ids(ids)
        if np.any(arr >= self.sampleable_ids[1]):
            bad = int(np.flatnonzero(arr >= self.sampleable_ids[1])[0])
            raise ValueError(f"id {int(arr[bad])} at position {bad} is a vocabulary padding slot, not a token")
        chars = self._DECODE[arr].copy()  # (l,) uint8
        if soft_mask is not None:
            soft = np.asarray(soft_mask.cpu() if _is_tensor(soft_mask) else soft_mask, dtype=bool)
            if soft.shape != arr.shape:
                raise ValueError(f"soft_mask shape {soft.shape} does not match ids shape {arr.shape}")
            chars[soft] |= 0x20  # ASCII lowercase bit; only ever set on letters since specials are removed below
        is_special = arr < NUM_SPECIAL
        if not is_special.any():
            return chars.tobytes().decode("ascii")
        if skip_special_tokens:
            return chars[~is_special].tobytes().decode("ascii")
        # Rare path (debugging output): specials are multi-character, so splice them in by run.
        pieces, start = [], 0
        for pos in np.flatnonzero(is_special):
            pieces.append(chars[start:pos].tobytes().decode("ascii"))
            pieces.append(SPECIAL_TOKENS[int(arr[pos])])
            start = pos + 1
        pieces.append(chars[start:].tobytes().decode("ascii"))
        return "".join(pieces)

    def reverse_complement(self, ids):
        return reverse_complement(ids)

    def to_dict(self) -> dict:
        return {"name": self.name, "lenient": self.lenient}


class ByteTokenizer(_Tokenizer):
    """MambaByte-style: byte k -> id 5 + k (text is UTF-8 encoded first); vocab 264 (261 padded to 8)."""

    name = "byte"
    vocab_size = 264
    sampleable_ids = (NUM_SPECIAL, NUM_SPECIAL + 256)

    def encode(self, seq: str | bytes, add_special_tokens: bool = False) -> np.ndarray:
        raw = np.frombuffer(_as_bytes(seq, ascii_only=False, lenient=False), dtype=np.uint8)  # (l,)
        ids = raw.astype(np.int64) + NUM_SPECIAL
        return self._with_specials(ids) if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        arr = self._check_ids(ids)
        if np.any(arr >= self.sampleable_ids[1]):
            bad = int(np.flatnonzero(arr >= self.sampleable_ids[1])[0])
            raise ValueError(f"id {int(arr[bad])} at position {bad} is a vocabulary padding slot, not a token")
        is_special = arr < NUM_SPECIAL
        if is_special.any() and not skip_special_tokens:
            raise ValueError("ByteTokenizer.decode cannot render special ids as text; use skip_special_tokens=True")
        data = (arr[~is_special] - NUM_SPECIAL).astype(np.uint8).tobytes()
        return data.decode("utf-8", errors="replace")


def reverse_complement(ids):
    """Reverse complement of nucleotide ids along the last axis (numpy array or torch tensor, any shape).

    A<->T, C<->G; N, specials and padding ids are kept as they are. Padding is not treated specially, so a
    right-padded batch comes back left-padded: reverse-complement before padding.
    """
    table = NucleotideTokenizer._COMPLEMENT
    if _is_tensor(ids):
        import torch

        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"reverse_complement expects integer ids, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(table)):
            lo, hi = int(ids.min()), int(ids.max())
            raise ValueError(f"reverse_complement: ids must lie in [0, {len(table)}), got {lo}..{hi}")
        lut = torch.as_tensor(table, device=ids.device)
        return torch.flip(lut[ids.long()], dims=[-1]).to(ids.dtype)
    arr = np.asarray(ids)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"reverse_complement expects integer ids, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= len(table)):
        raise ValueError(f"reverse_complement: ids must lie in [0, {len(table)}), got {arr.min()}..{arr.max()}")
    return np.ascontiguousarray(table[arr][..., ::-1]).astype(arr.dtype, copy=False)


# DNA text complement, IUPAC codes included (R<->Y, K<->M, B<->V, D<->H; S, W, N self-complementary), case kept
_TEXT_COMPLEMENT = bytes.maketrans(b"ACGTURYKMBVDHSWNacgturykmbvdhswn", b"TGCAAYRMKVBHDSWNtgcaayrmkvbhdswn")


def reverse_complement_bytes(seq: bytes) -> bytes:
    """The reverse complement of DNA text (the minus strand read 5' to 3'); other bytes are kept as they are."""
    return bytes(seq).translate(_TEXT_COMPLEMENT)[::-1]


_TOKENIZERS = {"nucleotide": NucleotideTokenizer, "byte": ByteTokenizer}


def tokenizer_from_name(name: str, **kwargs) -> NucleotideTokenizer | ByteTokenizer:
    """Build the tokenizer a checkpoint config names ("nucleotide" or "byte"); kwargs go to its constructor."""
    if name not in _TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; expected one of {sorted(_TOKENIZERS)}")
    try:
        return _TOKENIZERS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad options for the {name!r} tokenizer: {kwargs} ({err})") from None
