"""transformers loads (and pushes) tiny models built from config through the local hub, by revision."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "step"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_push_to_hub_branch_and_from_pretrained_by_revision(api, repo_id, tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = BertModel(config)
    tokenizer = _tiny_tokenizer()
    model.push_to_hub(repo_id, revision="dev/v1")
    tokenizer.push_to_hub(repo_id, revision="dev/v1")
    assert "model.safetensors" in api.list_repo_files(repo_id, revision="dev/v1")

    cache = tmp_path / "cache"
    loaded = AutoModel.from_pretrained(repo_id, revision="dev/v1", cache_dir=cache)
    assert _same_weights(model, loaded)
    assert AutoConfig.from_pretrained(repo_id, revision="dev/v1", cache_dir=cache).hidden_size == 16
    tok = AutoTokenizer.from_pretrained(repo_id, revision="dev/v1", cache_dir=cache)
    assert tok("hello world")["input_ids"] == [5, 6]

    # A second load is served from the cache, pinned to the commit the branch pointed at.
    sha = api.model_info(repo_id, revision="dev/v1").sha
    assert _same_weights(model, AutoModel.from_pretrained(repo_id, revision=sha, cache_dir=cache))


def test_sharded_causal_lm_with_generation_config_on_two_branches(api, repo_id, tmp_path):
    from hubckpt.hub.commits import commit_folder

    torch.manual_seed(1)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0)
    models = {}
    for step in (100, 200):
        model = GPT2LMHeadModel(config)
        folder = tmp_path / f"step-{step}"
        model.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "model.safetensors.index.json").exists()
        branch = f"step-{step:07d}"
        api.create_branch(repo_id, branch=branch)
        commit_folder(api, repo_id, folder, revision=branch, commit_message=f"step {step}")
        models[branch] = model

    for branch, model in models.items():
        loaded = AutoModelForCausalLM.from_pretrained(repo_id, revision=branch, cache_dir=tmp_path / "cache")
        assert _same_weights(model, loaded), branch


def test_unknown_revision_and_repo_give_transformers_errors(repo_id, tmp_path):
    with pytest.raises(OSError, match="not a valid git identifier"):
        AutoConfig.from_pretrained(repo_id, revision="nope", cache_dir=tmp_path)
    with pytest.raises(OSError, match="not a valid model identifier|is not a local folder"):
        AutoConfig.from_pretrained("alice/no-such-model", cache_dir=tmp_path)
