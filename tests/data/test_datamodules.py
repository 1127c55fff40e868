"""Lightning DataModules: window warmup across epochs, the three datasets, and the light import."""

import subprocess
import sys

import pytorch_lightning as pl
import torch

from mambadna.data import GenomeDataModule, LabelledDataModule, SpeciesDataModule, bundled_path


class _Probe(pl.LightningModule):
    """Records what each training epoch received; learns nothing useful."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(batch["input_ids"].clone())
        return (self.weight * batch["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _Warmup(pl.Callback):
    def on_train_epoch_end(self, trainer, module):
        dm = trainer.datamodule
        dm.set_window(dm.window_bp * 2, dm.batch_size // 2)


def _trainer(**kw):
    return pl.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      reload_dataloaders_every_n_epochs=1, accelerator="cpu", **kw)


def test_set_window_takes_effect_next_epoch_and_epochs_differ(copy_bundled):
    dm = GenomeDataModule(copy_bundled("lambda"), window_bp=256, batch_size=8, seed=0)
    probe = _Probe()
    _trainer(callbacks=[_Warmup()]).fit(probe, datamodule=dm)
    shapes = {e: {tuple(x.shape) for x in batches} for e, batches in probe.seen.items()}
    assert shapes == {0: {(8, 256)}, 1: {(4, 512)}, 2: {(2, 1024)}}


def test_genome_datamodule_epoch_comes_from_the_trainer(copy_bundled):
    path = copy_bundled("mt_human")
    probe = _Probe()
    _trainer().fit(probe, datamodule=GenomeDataModule(path, window_bp=128, batch_size=4, seed=1))
    assert not torch.equal(probe.seen[0][0], probe.seen[1][0])
    again = _Probe()
    _trainer().fit(again, datamodule=GenomeDataModule(path, window_bp=128, batch_size=4, seed=1))
    assert all(torch.equal(probe.seen[e][0], again.seen[e][0]) for e in range(3))


def test_species_and_labelled_datamodules(tmp_path):
    dm = SpeciesDataModule(bundled_path("great_apes"), window_bp=200, batch_size=16, num_workers=2)
    assert dm.num_classes == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (16, 200) and batch["label"].shape == (16,)
    assert next(iter(dm.val_dataloader()))["input_ids"].shape == (16, 200)
    seq = "".join(bundled_path("mt_orang").read_text().splitlines()[1:])
    table = tmp_path / "t.tsv"
    table.write_text("sequence\tlabel\n" + "".join(f"{seq[i:i + 30 + i]}\t{i % 3}\n" for i in range(0, 300, 10)))
    ldm = LabelledDataModule(table, val=table, batch_size=4)
    assert ldm.class_names == ["0", "1", "2"]
    b = next(iter(ldm.train_dataloader()))
    assert b["input_ids"].shape[0] == 4 and b["attention_mask"].dtype == torch.bool
    ldm.set_window(16, 2)
    b = next(iter(ldm.train_dataloader()))
    assert b["input_ids"].shape == (2, 16)


def test_importing_mambadna_data_does_not_import_lightning():
    code = "import sys, mambadna.data; print(any(m.split('.')[0] in ('pytorch_lightning', 'lightning') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
