import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """Tiny base weights in the published formats (Phi-3 folder, eva_vit_g.pth, instruct_blip trimmed .pth)."""
    from etchat.toy.tiny import write_tiny_base

    return write_tiny_base(str(tmp_path_factory.mktemp("tiny_base")))


def build_tiny_etchat(spec, **overrides):
    """An E.T. Chat model started from tiny base weights, as stage 1 starts from the published ones."""
    from etchat.toy.tiny import build_untrained

    return build_untrained(spec, **overrides)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_base, tmp_path_factory):
    """A full tiny E.T. Chat checkpoint (format b) on disk."""
    from etchat.model.loading import save_etchat

    model, tokenizer = build_tiny_etchat(tiny_base)
    path = str(tmp_path_factory.mktemp("tiny_etchat"))
    save_etchat(model, tokenizer, path)
    return path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face Hub cache that huggingface_hub uses in this process (as HF_HUB_CACHE sets it), offline;
    tests fill it with tests.hub_cache.write_snapshot."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
