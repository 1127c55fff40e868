import subprocess
import sys

import mambadna


def test_public_api_and_version():
    assert mambadna.__version__ == "0.1.0"
    for name in ("MambaConfig", "MambaLM", "MambaClassifier", "NucleotideTokenizer", "ByteTokenizer",
                 "reverse_complement", "tokenizer_from_name"):
        assert hasattr(mambadna, name), name


def test_import_does_not_pull_in_lightning_or_triton():
    code = (
        "import sys, mambadna; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'triton', 'lightning', 'pytorch_lightning'}); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import mambadna imported {out.stdout.strip()}"
