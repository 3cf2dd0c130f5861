"""Activations (hooks, pooling, storage), weight drift and plots, without a hub."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from hubckpt.analysis import activations as act, compare, plots
from hubckpt.analysis.weights import DriftTracker, drift_over, layer_of, relative_drift, select_keys
from hubckpt.errors import AnalysisError

from .factories import tiny_gpt2_config


def _gpt2(seed: int = 0, n_layer: int = 3):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(tiny_gpt2_config(n_layer=n_layer, n_embd=32, vocab_size=64, n_positions=16)).eval()


def word_tokenizer(words: list[str]):
    """A word-level tokenizer built offline (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(dict.fromkeys(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


# -- activations ------------------------------------------------------------------------------------------


def test_default_layers_are_the_transformer_blocks_or_the_children():
    assert act.default_layers(_gpt2(n_layer=3)) == ["transformer.h.0", "transformer.h.1", "transformer.h.2"]
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert act.default_layers(mlp) == ["0", "2"]
    model = _gpt2()
    assert act.resolve_layers(model, ["-1", 0, "transformer.ln_f"]) == [
        "transformer.h.2",
        "transformer.h.0",
        "transformer.ln_f",
    ]
    with pytest.raises(AnalysisError, match="out of range"):
        act.resolve_layers(model, [5])
    with pytest.raises(AnalysisError, match="No module named"):
        act.resolve_layers(model, ["transformer.h.9"])
    with pytest.raises(AnalysisError, match="Did you mean 'transformer.h.1'"):
        act.resolve_layers(model, ["h.1"])  # the name under AutoModel, asked of a model with an LM head


def test_block_outputs_match_the_models_own_hidden_states_and_hooks_are_removed():
    model = _gpt2()
    ids = torch.randint(0, 64, (5, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())  # transformers adds its own on first use
    acts = act.collect_activations(model, act.Probe(input_ids=ids), batch_size=2, pool="flatten")
    for i in range(2):  # the last entry of hidden_states has ln_f applied; blocks 0 and 1 are raw outputs
        torch.testing.assert_close(acts[f"transformer.h.{i}"], hidden[i + 1].reshape(5, -1))
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before
    tokens = act.collect_activations(model, act.Probe(input_ids=ids), ["transformer.h.1"], pool="tokens")
    torch.testing.assert_close(tokens["transformer.h.1"], hidden[2].reshape(35, -1))


def test_mean_and_last_pooling_ignore_padding():
    model = _gpt2()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    padded = act.Probe(input_ids=ids, attention_mask=mask)
    alone = act.Probe(input_ids=torch.tensor([[9, 10]]))
    for pool in ("mean", "last"):
        both = act.collect_activations(model, padded, [1], pool=pool)["transformer.h.1"]
        single = act.collect_activations(model, alone, [1], pool=pool)["transformer.h.1"]
        assert both.shape == (2, 32)
        torch.testing.assert_close(both[1], single[0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        h = model(input_ids=torch.tensor([[9, 10]]), output_hidden_states=True).hidden_states[2][0]
    torch.testing.assert_close(single[0], h[-1], atol=1e-5, rtol=1e-5)


def test_any_module_over_a_tensor_probe():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(10, 4)
    acts = act.collect_activations(mlp, x, batch_size=3)
    torch.testing.assert_close(acts["0"], mlp[0](x))
    torch.testing.assert_close(acts["2"], mlp(x))
    assert mlp.training  # restored


def test_text_probes_are_tokenised_and_padded(tmp_path):
    tok = word_tokenizer("the cat sat on a mat dog ran".split())
    probe = act.Probe.from_texts(["the cat sat", "a dog", "  ", "the mat"], tok)
    assert probe.input_ids.tolist() == [[2, 3, 4], [6, 8, 0], [2, 7, 0]]
    assert probe.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 0]]
    text = tmp_path / "probe.txt"
    text.write_text("the cat\n\na dog ran\n")
    assert act.is_text_probe(text) and act.read_text_probe(text) == ["the cat", "a dog ran"]
    from safetensors.torch import save_file

    st = tmp_path / "probe.safetensors"
    save_file({"input_ids": probe.input_ids}, str(st))
    assert not act.is_text_probe(st)
    assert act.Probe.from_safetensors(st).input_ids.tolist() == probe.input_ids.tolist()
    save_file({"tokens": probe.input_ids}, str(st))
    with pytest.raises(AnalysisError, match="no `input_ids`"):
        act.Probe.from_safetensors(st)
    with pytest.raises(AnalysisError, match="integer tensor"):
        act.Probe(input_ids=torch.randn(2, 3))


def test_store_writes_one_file_per_model_and_skips_what_it_has(tmp_path):
    probe = act.Probe(input_ids=torch.randint(0, 64, (6, 5), generator=torch.Generator().manual_seed(2)))
    built = []

    def loader(seed):
        def build():
            built.append(seed)
            return _gpt2(seed)

        return build

    store = act.ActivationStore(tmp_path / "acts")
    names = act.collect_for_models(
        [("step-2", loader(2)), ("step-1", loader(1))],
        probe,
        store,
        metadata={"step-2": {"step": 2}, "step-1": {"step": 1}},
    )
    assert names == ["step-2", "step-1"] and built == [2, 1]
    assert store.names() == ["step-1", "step-2"]  # step order
    assert store.layers("step-1") == ["transformer.h.0", "transformer.h.1", "transformer.h.2"]
    assert store.metadata("step-2")["step"] == 2 and store.metadata("step-2")["pool"] == "mean"
    expected = act.collect_activations(_gpt2(1), probe)["transformer.h.2"]
    torch.testing.assert_close(store.load("step-1", "transformer.h.2"), expected)
    assert not list((tmp_path / "acts").glob(".*tmp*"))
    act.collect_for_models([("step-1", loader(1)), ("step-3", loader(3))], probe, store)
    assert built == [2, 1, 3]  # step-1 was stored already: not even loaded

    cka = compare.revision_similarity(store, ["step-1", "step-2", "step-3"])
    assert list(cka) == store.layers("step-1")
    m = cka["transformer.h.0"]
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1) and (m < 1 - 1e-6).sum() == 6
    layers = compare.layer_similarity(store, "step-1")
    assert layers.shape == (3, 3) and np.allclose(np.diag(layers), 1)
    with pytest.raises(AnalysisError, match="not collected"):
        store.load("step-1", "nope")


# -- weights ----------------------------------------------------------------------------------------------


def test_layer_of_groups_parameters_by_block_or_module():
    assert layer_of("transformer.h.3.attn.c_attn.weight") == "transformer.h.3"
    assert layer_of("model.layers.10.mlp.up_proj.weight") == "model.layers.10"
    assert layer_of("transformer.wte.weight") == "transformer.wte"
    assert layer_of("bias") == "bias"


def test_drift_is_zero_for_identical_revisions_and_exact_for_known_changes():
    ref = {
        "a.0.w": torch.ones(4, 4),
        "a.0.b": torch.zeros(4),
        "a.1.w": torch.full((2, 2), 2.0),
        "steps": torch.tensor([3]),
    }
    moved = {
        "a.0.w": 1.1 * torch.ones(4, 4),
        "a.0.b": torch.full((4,), 0.5),
        "a.1.w": torch.full((2, 2), 2.0),
        "steps": torch.tensor([4]),
    }
    res = drift_over([("r0", ref), ("r1", dict(ref)), ("r2", moved)], steps=[0, 1, 2])
    assert res.reference == "r0" and res.revisions == ["r0", "r1", "r2"] and res.steps == [0, 1, 2]
    assert set(res.parameters) == {"a.0.w", "a.0.b", "a.1.w"}  # integer tensors are left out
    assert res.parameters["a.0.w"] == pytest.approx([0.0, 0.0, 0.1])
    assert res.parameters["a.1.w"] == [0.0, 0.0, 0.0]
    assert res.parameters["a.0.b"][:2] == [0.0, 0.0] and math.isnan(res.parameters["a.0.b"][2])
    # layer a.0 pools w and b: sqrt(16 * 0.01 + 4 * 0.25) / sqrt(16)
    assert res.layers["a.0"][2] == pytest.approx(math.sqrt(0.16 + 1.0) / 4)
    assert res.norms["a.0.w"] == pytest.approx([4.0, 4.0, 4.4])
    assert res.to_json()["parameters"]["a.0.b"][2] is None
    assert relative_drift(torch.full((3,), 2.0), torch.ones(3)) == pytest.approx(1.0)


def test_drift_reads_only_selected_tensors_from_lazy_sources(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    class Counting:
        def __init__(self, path):
            self.f = safe_open(str(path), "pt")
            self.read = []

        def keys(self):
            return self.f.keys()

        def get_tensor(self, name):
            self.read.append(name)
            return self.f.get_tensor(name)

    model = _gpt2()
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(sd, str(tmp_path / "a.safetensors"))
    save_file({k: v * 2 for k, v in sd.items()}, str(tmp_path / "b.safetensors"))
    a, b = Counting(tmp_path / "a.safetensors"), Counting(tmp_path / "b.safetensors")
    tracker = DriftTracker(a, name="a", keys=["transformer.h.1.*.weight"])
    tracker.add("b", b, 10)
    assert sorted(a.read) == sorted(b.read) == sorted(tracker.keys)
    assert len(tracker.keys) == 6 and all(k.startswith("transformer.h.1.") for k in tracker.keys)
    assert all(v == [pytest.approx(1.0)] for v in tracker.result.parameters.values())
    assert select_keys(["x.w", "y.w"], prefix="y") == ["y.w"]
    with pytest.raises(AnalysisError, match="No tensor matches"):
        select_keys(["x.w"], ["z.*"])
    with pytest.raises(AnalysisError, match="lacks tensors"):
        tracker.add("c", {"other": torch.ones(1)})


# -- plots ------------------------------------------------------------------------------------------------


def _png(path):
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.load()
        colors = len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0))
        return im.size, colors


@pytest.mark.slow
def test_plots_are_real_pngs(tmp_path):
    labels = [f"step-{i:07d}" for i in range(0, 30, 2)]
    n = len(labels)
    decay = np.exp(-np.abs(np.subtract.outer(np.arange(n), np.arange(n))) / 4)
    p = plots.plot_cka_heatmaps(
        {f"transformer.h.{i}": decay ** (i + 1) for i in range(5)}, labels, tmp_path / "cka.png"
    )
    size, colors = _png(p)
    assert size[0] > 800 and size[1] > 400 and colors > 50  # a grid of heatmaps, not a blank canvas
    steps = list(range(0, 30, 2))
    p = plots.plot_drift(
        steps,
        {f"layer{i}": [s * (i + 1) / 100 for s in steps] for i in range(15)},
        tmp_path / "drift.png",
        reference="step-0000000",
    )
    size, colors = _png(p)
    assert colors > 20
    records = [{"step": s, "metrics": {"loss": 1 / (s + 1), "acc": s / 30, "note": "x"}} for s in steps]
    _png(plots.plot_metrics(records, tmp_path / "metrics.png"))
    _png(plots.plot_similarity_matrix(decay[:4, :4], ["a", "b", "c", "d"], tmp_path / "layers.png", title="layers"))
    again = plots.plot_cka_heatmaps({"l": decay}, labels, tmp_path / "a.png")
    assert again.read_bytes() == plots.plot_cka_heatmaps({"l": decay}, labels, tmp_path / "b.png").read_bytes()
    with pytest.raises(AnalysisError, match="no numeric metrics"):
        plots.plot_metrics([{"step": 1, "metrics": {}}], tmp_path / "none.png")
    with pytest.raises(AnalysisError, match="expected"):
        plots.plot_cka_heatmaps({"l": decay}, labels[:3], tmp_path / "bad.png")
