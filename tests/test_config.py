import json

import pytest

from mambadna.config import MambaConfig, base, small, tiny


def test_defaults_and_derived_sizes():
    cfg = MambaConfig(d_model=100, n_layer=3)
    assert cfg.d_inner == 200
    assert cfg.dt_rank_resolved == 7  # ceil(100 / 16)
    assert MambaConfig(d_model=64, n_layer=1, dt_rank=3).dt_rank_resolved == 3
    assert (cfg.vocab_size, cfg.d_state, cfg.d_conv, cfg.expand, cfg.tokenizer) == (16, 16, 4, 2, "nucleotide")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d_model": 0}, "d_model must be a positive int, got 0"),
        ({"n_layer": 2.5}, "n_layer must be a positive int"),
        ({"d_conv": 0}, "d_conv must be a positive int"),
        ({"d_state": True}, "d_state must be a positive int"),
        ({"dt_rank": "full"}, "dt_rank must be 'auto' or a positive int"),
        ({"dt_min": 0.2}, r"dt_min \(0.2\) must be smaller than dt_max \(0.1\)"),
        ({"dt_init_floor": 0}, "dt_init_floor must be a positive number"),
        ({"vocab_size": 20}, r"vocab_size \(20\) must be a multiple of pad_vocab_multiple \(8\); use 24"),
        ({"tokenizer": "byte"}, "pass vocab_size=264"),
        ({"tokenizer": "kmer"}, "unknown tokenizer 'kmer'"),
        ({"scan_backend": "cuda"}, "scan_backend must be one of"),
        ({"scan_kernel": "v3"}, "scan_kernel must be one of"),
        ({"scan_kernel": "v2", "d_state": 32}, "scan_kernel v2 keeps at most 16 states"),
        ({"conv_backend": "cuda"}, "conv_backend must be one of"),
        ({"norm_backend": "cuda"}, "norm_backend must be one of"),
        ({"tie_embeddings": 1}, "tie_embeddings must be a bool"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MambaConfig(**{"d_model": 64, "n_layer": 2, **kwargs})


def test_byte_tokenizer_config_is_valid_with_its_vocab():
    assert MambaConfig(d_model=64, n_layer=2, tokenizer="byte", vocab_size=264).vocab_size == 264


def test_dict_round_trip_through_json():
    cfg = small(dt_rank=4, scan_backend="ref", scan_kernel="v1", norm_backend="triton")
    again = MambaConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_from_dict_lists_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown MambaConfig keys: \['d_modle', 'layers'\]"):
        MambaConfig.from_dict({"d_modle": 64, "layers": 2, "n_layer": 2})
    with pytest.raises(ValueError, match=r"missing required keys: \['n_layer'\]"):
        MambaConfig.from_dict({"d_model": 64})


def test_presets():
    assert (tiny().d_model, tiny().n_layer) == (64, 2)
    assert (small().d_model, small().n_layer) == (128, 6)
    assert (base().d_model, base().n_layer) == (256, 8)
    assert tiny(n_layer=3).n_layer == 3


def test_with_memory_lowers_the_initial_delta_only_where_it_reaches_less_far():
    cfg = tiny()
    assert cfg.with_memory(1000) is cfg and cfg.with_memory(500) is cfg  # 1 / dt_min = 1000 already
    long = cfg.with_memory(100_000)
    assert long.dt_min == pytest.approx(1e-5) and long.dt_init_floor == pytest.approx(1e-6)
    assert (long.dt_max, long.d_model, long.n_layer) == (cfg.dt_max, cfg.d_model, cfg.n_layer)
    low_floor = MambaConfig(d_model=16, n_layer=1, dt_init_floor=1e-8).with_memory(100_000)
    assert low_floor.dt_init_floor == 1e-8  # never raised
