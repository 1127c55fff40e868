"""Embeddings of sequences from a trained model: pooled per sequence, optionally per position, at any length.

Where the work goes: on the GPU when there is one (bf16 autocast there, fp32 state in the scan), batches of similar
length (records are sorted by length, so padding stays small), and sequences longer than `AUTO_CHUNK_BP` run
chunk by chunk with the state carried (mambadna/chunking.py): the pooled vector is accumulated per chunk and
per-position output is written chunk by chunk into a float16 file on disk, so (b, l, d) is never held whole.

The files they are written to (npy + TSV, parquet, h5ad; per-position `per_position.npy`) are
mambadna/commands/embedding_io.py's.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mambadna.checkpoint import load
from mambadna.chunking import check_chunk_bp, run_chunked
from mambadna.commands.configs import EmbedConfig
from mambadna.commands.embedding_io import (OUTPUT_NAMES, PER_POSITION_NAME, SOURCE_NAME, remove_other_outputs,
                                           write_embeddings)
from mambadna.commands.run_dir import out_folder, refuse_existing
from mambadna.config import POOLINGS
from mambadna.files import atomic_path, lock_folder, release_folder, write_json
from mambadna.model import MambaClassifier, MambaLM
from mambadna.pooling import check_mask, pool_finish, pool_partial
from mambadna.run_config import RuntimeSpec, check_label_regex
from mambadna.threads import configure_torch_threads
from mambadna.tokenizer import reverse_complement_bytes, tokenizer_from_name

AUTO_CHUNK_BP = 1 << 16  # sequences longer than this run in chunks of this size unless chunk_bp is given


@dataclass
class Record:
    name: str
    sequence: bytes
    label: str = ""


def read_records(path: str | Path, label_regex: str = "", sequence_column: str = "sequence",
                 label_column: str = "label", name_column: str = "name", regions: str | Path | None = None
                 ) -> list[Record]:
    """Sequences of a FASTA (labels from `label_regex`'s group in the header, if given), of BED `regions` of a
    reference FASTA (one record per line, named by column 4, minus-strand lines reverse-complemented, labels from
    `label_regex` on the name), or of a table (CSV/TSV, parquet, a Hugging Face `datasets` folder) with a
    `sequence` column and optional `name` and `label` columns."""
    from mambadna.data import Genome
    from mambadna.data.labelled import fasta_headers
    from mambadna.data.tables import is_table, read_table

    path = Path(path)
    if not path.is_file() and not (regions is None and is_table(path)):
        raise ValueError(f"{path}: no such file")
    pattern = check_label_regex(label_regex, "--label-regex") if label_regex else None

    def label_of(text: str) -> str:
        match = pattern.search(text) if pattern else None
        return match.group(1) if match else ""

    if regions is not None:
        from mambadna.data.regions import read_bed_regions

        genome = Genome(path)
        records = []
        for interval, name, strand in read_bed_regions(regions, genome.contigs):
            if interval.length_bp == 0:
                raise ValueError(f"{regions}: region {name!r} ({interval.contig}:{interval.start_bp}-"
                                 f"{interval.end_bp}) has no bases (start = end); remove it or give it a length")
            seq = genome.fetch(interval.contig, interval.start_bp, interval.end_bp)
            records.append(Record(name, reverse_complement_bytes(seq) if strand == "-" else seq, label_of(name)))
    elif is_table(path):
        columns, _ = read_table(path, [sequence_column], (name_column, label_column))
        n = len(columns[sequence_column])
        names, labels = columns.get(name_column, [""] * n), columns.get(label_column, [""] * n)
        records = [Record(names[i] or f"seq{i}", columns[sequence_column][i].strip().encode(), labels[i])
                   for i in range(n)]
    else:
        genome = Genome(path)
        # pyfaidx keeps only the first word of a header; labels usually live in the rest of the line
        headers = fasta_headers(genome.fasta_path if not genome.compressed else genome.source_path) if pattern else {}
        records = [Record(name, genome.fetch(name, 0, length_bp), label_of(headers.get(name, name)))
                   for name, length_bp in genome.contigs.items()]
    if not records:
        raise ValueError(f"{path}: no sequences")
    empty = [r.name for r in records if not r.sequence]
    if empty:
        raise ValueError(f"{path}: empty sequence(s) {empty[:5]}")
    return records


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None): the GPU when there is one, else the CPU; "cuda" / "cuda:N" / "cpu" as asked."""
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: no CUDA GPU is visible on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def load_lm(checkpoint: str | Path, map_location="cpu") -> MambaLM:
    """A MambaLM from any saved model folder; a MambaClassifier folder gives its backbone."""
    try:
        model = load(checkpoint, map_location=map_location)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    return model.backbone if isinstance(model, MambaClassifier) else model


def embed_batch(model: MambaLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
                chunk_bp: int | None, layer: int | None = None, per_position=None):
    """Pooled vectors (b, d) fp32 of a right-padded batch; `per_position(start, end, vectors (b, c, d))` receives
    every chunk's per-position vectors as they are made (nothing of size (b, l, d) is kept). The vectors are the
    final-normed hidden states, or with `layer` the residual stream after that block (0-based), un-normed."""
    b, l = input_ids.shape
    if not model.config.causal:  # read from both ends: one pass over the whole batch, with the model's own pooling
        if layer is not None:
            raise ValueError(f"--layer needs a causal model; this one is {model.config.kind}")
        hidden, vectors = model.embed(input_ids, attention_mask, pooling)  # (b, l, d), (b, d)
        if per_position is not None:
            per_position(0, l, hidden.float())
        return vectors.float()
    mask = check_mask(attention_mask, b, l, input_ids.device)
    after = torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1)  # (b, l + 1): is position t real
    hidden = model.norm_f if layer is None else (lambda residual: residual)
    n_layers = None if layer is None else layer + 1

    def share(residual, start, end):
        vectors = hidden(residual).float()  # (b, c, d)
        if per_position is not None:
            per_position(start, end, vectors)
        return (pool_partial(vectors, mask[:, start:end], after[:, start + 1 : end + 1], start, pooling),)

    (total,), _ = run_chunked(model, input_ids, chunk_bp, share, n_layers=n_layers, attention_mask=attention_mask)
    return pool_finish(total, mask, pooling)


@torch.no_grad()
def embed_records(model: MambaLM, records: list[Record], pooling: str = "mean", per_position: bool = False,
                  batch_size: int = 16, max_length_bp: int | None = None, device="cpu", chunk_bp: int | None = None,
                  layer: int | None = None, rc_average: bool = False, precision: str = "auto",
                  per_position_out: np.ndarray | None = None, progress=None, pooled_out: np.ndarray | None = None,
                  batches: list[list[int]] | None = None):
    """-> (pooled (n, d) float32, per-position list of (l_i, d) arrays, or None when not asked or when written into
    `per_position_out` (sum of l_i, d) at the rows of `per_position_rows(records, max_length_bp)`). `pooled_out`
    receives the pooled rows instead of a new array; `batches` (lists of record indices) embeds only those.

    Batches are length-sorted and right-padded (the model is causal: right padding leaves real positions
    unchanged). `chunk_bp` (default: `AUTO_CHUNK_BP` for sequences longer than that) runs each batch chunk by chunk
    with the state carried: the same vectors in memory that grows with the chunk. `layer` takes block `layer`'s
    output instead of the final hidden states; `rc_average` averages with the reverse complement's vectors (its
    positions mapped back to the forward strand). `precision` "auto" is bf16 autocast on CUDA, fp32 elsewhere."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if chunk_bp is not None:
        check_chunk_bp(chunk_bp, model.config)
    if layer is not None and not 0 <= layer < model.config.n_layer:
        raise ValueError(f"--layer {layer}: the model has blocks 0..{model.config.n_layer - 1}")
    device = resolve_device(device)
    tokenizer = tokenizer_from_name(model.config.tokenizer)
    if rc_average and not hasattr(tokenizer, "reverse_complement"):
        raise ValueError(f"reverse-complement averaging needs a nucleotide model; this one uses {tokenizer.name}")
    model = model.to(device).eval()
    amp = device.type == "cuda" and precision in ("auto", "bf16", "bf16-mixed", "bf16-true")
    d = model.config.d_model
    seqs = [r.sequence[:max_length_bp] if max_length_bp else r.sequence for r in records]
    rows = per_position_rows(seqs)
    pooled = np.zeros((len(records), d), dtype=np.float32) if pooled_out is None else pooled_out
    positions: list[np.ndarray | None] | None = [None] * len(records) if per_position and per_position_out is None \
        else None
    for idx in length_batches(seqs, batch_size) if batches is None else batches:
        batch = tokenizer.batch_encode([seqs[i] for i in idx])
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        lengths = [len(seqs[i]) for i in idx]
        long = ids.shape[1] > AUTO_CHUNK_BP and model.config.causal
        chunk = chunk_bp or (AUTO_CHUNK_BP if long else None)
        strands = [(ids, False)]
        if rc_average:
            strands.append((_reverse_complement_padded(tokenizer, ids, lengths), True))
        vectors = 0
        for strand_ids, flipped in strands:
            sink = None
            if per_position:
                sink = _PositionSink(idx, lengths, rows, per_position_out, positions, d, flipped, len(strands))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                vectors = vectors + embed_batch(model, strand_ids, mask, pooling, chunk, layer, sink) / len(strands)
        pooled[idx] = vectors.float().cpu().numpy()
        if progress is not None:
            progress(sum(lengths))
    return pooled, positions


def length_batches(seqs, batch_size: int) -> list[list[int]]:
    """Record indices in batches of similar length (sorted by length): little padding, and the longest last."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]


def per_position_rows(seqs) -> np.ndarray:
    """Row offsets (n + 1,) of each sequence's positions in a per-position array (in record order)."""
    rows = np.zeros(len(seqs) + 1, dtype=np.int64)
    rows[1:] = np.cumsum([len(s) for s in seqs])
    return rows


def _reverse_complement_padded(tokenizer, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """The reverse complement of each row's real tokens, still right-padded (b, l)."""
    out = ids.clone()
    for j, n in enumerate(lengths):
        out[j, :n] = torch.as_tensor(tokenizer.reverse_complement(ids[j, :n].cpu().numpy()), device=ids.device)
    return out


class _PositionSink:
    """Receives one chunk's per-position vectors (b, c, d) and files each real row's positions, on the forward
    strand's coordinates (a reverse-complement pass writes its position t to l - 1 - t), averaged over strands."""

    def __init__(self, idx, lengths, rows, out, positions, d, flipped, strands):
        self.idx, self.lengths, self.rows, self.out, self.positions = idx, lengths, rows, out, positions
        self.d, self.flipped, self.weight = d, flipped, 1.0 / strands

    def __call__(self, start: int, end: int, vectors: torch.Tensor) -> None:
        host = (vectors * self.weight).cpu().numpy()  # (b, c, d) fp32
        for j, i in enumerate(self.idx):
            n = self.lengths[j]
            stop = min(end, n)
            if stop <= start:
                continue
            part = host[j, : stop - start]  # positions [start, stop) of this strand
            lo, hi = (n - stop, n - start) if self.flipped else (start, stop)
            if self.flipped:
                part = part[::-1]
            if self.out is not None:  # the forward strand comes first and writes; the reverse one adds its half
                target = self.out[self.rows[i] + lo : self.rows[i] + hi]
                target[:] = target + part if self.flipped else part
            else:
                if self.positions[i] is None:
                    self.positions[i] = np.zeros((n, self.d), dtype=np.float32)
                self.positions[i][lo:hi] += part


def run(cfg: EmbedConfig) -> dict:
    """The `mambadna embed` command: read, embed (per-position vectors streamed to disk), write, and report bases
    per second and peak GPU memory. More than one of runtime.devices spreads the batches over that many devices
    (GPUs, or CPU processes with --accelerator cpu) through Lightning's predict loop. --out is held while it runs
    (the other processes of a many-device run write into the folder the first one holds), and afterwards holds
    this run's embedding files only."""
    configure_torch_threads()
    out = out_folder(cfg.out_dir)
    outputs = [out / name for name in OUTPUT_NAMES]
    if Path(cfg.input).resolve() in [p.resolve() for p in outputs]:
        raise ValueError(f"--out {out} would overwrite the input {cfg.input}; choose another --out")
    refuse_existing(outputs, cfg.overwrite)  # any format's: two runs' results never sit side by side
    held = _launched_rank() == 0
    if held:
        lock_folder(out, "embed")
    try:
        result = _run_distributed(cfg) if cfg.runtime.device_count() > 1 else _run_one(cfg)
        if held:
            written = ("embeddings", "index", "per_position", "source")
            remove_other_outputs(out, [v for k, v in result.items() if k in written])
        return result
    except UnicodeDecodeError as exc:
        raise ValueError(f"{cfg.input}: not a text file ({exc}); give a FASTA or a table") from None
    finally:
        if held:
            release_folder(out)


def runtime_device(runtime: RuntimeSpec, device: str = "") -> torch.device:
    """The one device of a single-process command: `device` by name when given (--device), else
    runtime.accelerator on the first of runtime.devices."""
    if device or runtime.accelerator == "auto":
        return resolve_device(device or "auto")
    if runtime.accelerator in ("gpu", "cuda"):
        devices = runtime.lightning_devices()
        return resolve_device(f"cuda:{devices[0]}" if isinstance(devices, list) else "cuda")
    return resolve_device(runtime.accelerator)


def _records(cfg: EmbedConfig) -> tuple[list[Record], list[bytes]]:
    records = read_records(cfg.input, label_regex=cfg.label_regex, regions=cfg.regions or None)
    return records, [r.sequence[:cfg.max_length_bp] if cfg.max_length_bp else r.sequence for r in records]


def _embed_args(cfg: EmbedConfig) -> dict:
    return dict(pooling=cfg.pooling, per_position=cfg.per_position, batch_size=cfg.batch_size,
                max_length_bp=cfg.max_length_bp, chunk_bp=cfg.chunk_bp, layer=cfg.layer, rc_average=cfg.rc_average,
                precision=cfg.runtime.precision)


def _run_one(cfg: EmbedConfig) -> dict:
    device = runtime_device(cfg.runtime, cfg.device)
    model = load_lm(cfg.checkpoint, map_location=device)
    records, seqs = _records(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = per_position_rows(seqs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # the per-position file is streamed under a temporary name and renamed into place only when complete
    with atomic_path(out_dir / PER_POSITION_NAME) if cfg.per_position else contextlib.nullcontext() as tmp:
        stream = None
        if cfg.per_position:
            stream = np.lib.format.open_memmap(tmp, mode="w+", dtype=cfg.per_position_dtype,
                                               shape=(int(rows[-1]), model.config.d_model))
        start = time.perf_counter()
        pooled, _ = embed_records(model, records, device=device, per_position_out=stream, **_embed_args(cfg))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        if stream is not None:
            stream.flush()
            del stream
    files = write_embeddings(out_dir, records, pooled, fmt=cfg.format,
                             per_position_rows=rows if cfg.per_position else None)
    files["source"] = write_source(out_dir, cfg)
    peak = round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None
    return _report(files, records, rows, seconds, str(device), peak, pooled.shape[1])


def _launched_rank() -> int:
    """This process's rank in a multi-process run (Lightning relaunches the command with RANK/LOCAL_RANK set)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _run_distributed(cfg: EmbedConfig) -> dict:
    """Every process embeds the batches it is dealt and writes their rows straight into two memory-mapped files
    (pooled vectors, per-position vectors) that the first process made before the others started; the first
    process then writes the outputs and renames the per-position file into place. Fewer batches than devices run
    in fewer processes (one: the plain path)."""
    devices = cfg.runtime.device_count()
    accelerator = runtime_device(cfg.runtime, cfg.device).type
    if accelerator == "cuda" and torch.cuda.device_count() < devices:
        raise ValueError(f"--devices {cfg.runtime.devices}: this machine has {torch.cuda.device_count()} GPU(s)")
    model = load_lm(cfg.checkpoint).eval()
    records, seqs = _records(cfg)
    batches = length_batches(seqs, cfg.batch_size)
    if len(batches) < devices:  # a process with no batch would wait forever for the others (every process agrees)
        if _launched_rank() == 0:
            warnings.warn(f"--devices {cfg.runtime.devices}: only {len(batches)} batch(es) of up to {cfg.batch_size} "
                          f"sequences to deal out; using {len(batches)} process(es)", stacklevel=2)
        if len(batches) == 1:
            return _run_one(cfg)
        devices = len(batches)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = (out_dir / ".embed-pooled.partial.npy", out_dir / ".embed-positions.partial.npy")
    try:
        return _predict_into_partials(cfg, model, records, seqs, batches, partial, devices, accelerator)
    except BaseException:
        if _launched_rank() == 0:  # no half-made file stays in --out
            for path in partial:
                path.unlink(missing_ok=True)
        raise


def _predict_into_partials(cfg: EmbedConfig, model, records, seqs, batches, partial, devices: int,
                           accelerator: str) -> dict:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from mambadna.tasks.predict import PredictTask

    rows, d = per_position_rows(seqs), model.config.d_model
    out_dir = Path(cfg.out_dir)
    pooled_path, positions_path = partial
    mode = "w+" if _launched_rank() == 0 else "r+"  # made by the first process, before it starts the others
    pooled = np.lib.format.open_memmap(pooled_path, mode=mode, dtype=np.float32, shape=(len(records), d))
    stream = np.lib.format.open_memmap(positions_path, mode=mode, dtype=cfg.per_position_dtype,
                                       shape=(int(rows[-1]), d)) if cfg.per_position else None

    def embed_some(idx, dev):  # this process's batch of record indices, into the shared files' rows
        embed_records(model, records, device=dev, per_position_out=stream, pooled_out=pooled, batches=[idx],
                      **_embed_args(cfg))

    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer = pl.Trainer(accelerator="gpu" if accelerator == "cuda" else "cpu", devices=devices, strategy="ddp",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    start = time.perf_counter()
    with warnings.catch_warnings():  # the rows are written by embed_some; that predict_step returns None is meant
        warnings.filterwarnings("ignore", message=".*predict returned None.*")
        trainer.predict(PredictTask(model, embed_some), dataloaders=loader, return_predictions=False)
    pooled.flush()
    if stream is not None:
        stream.flush()
    trainer.strategy.barrier()  # every process has flushed its rows
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    vectors = np.array(pooled)
    del pooled, stream
    if cfg.per_position:
        os.replace(positions_path, out_dir / PER_POSITION_NAME)
    pooled_path.unlink()
    files = write_embeddings(out_dir, records, vectors, fmt=cfg.format,
                             per_position_rows=rows if cfg.per_position else None)
    files["source"] = write_source(out_dir, cfg)
    return _report(files, records, rows, seconds, f"{devices} x {accelerator}", None, d)


def write_source(out_dir: Path, cfg: EmbedConfig) -> str:
    """source.json: what `probe` needs to read the embedded sequences again (its k-mer baseline)."""
    path = Path(out_dir) / SOURCE_NAME
    write_json(path, {"input": str(Path(cfg.input).resolve()),
                      "regions": str(Path(cfg.regions).resolve()) if cfg.regions else None,
                      "label_regex": cfg.label_regex, "max_length_bp": cfg.max_length_bp})
    return str(path)


def _report(files: dict, records, rows, seconds: float, device: str, peak_gib, d: int) -> dict:
    """What `mambadna embed` prints and returns: the files written, then throughput and memory."""
    return {**files, "sequences": len(records), "bases": int(rows[-1]), "seconds": round(seconds, 3),
            "bases_per_s": round(rows[-1] / max(seconds, 1e-9), 1), "device": device, "peak_gpu_gib": peak_gib,
            "d": int(d)}
