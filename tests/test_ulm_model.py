"""bench's GSLM unit LM: the transformer_lm_big size, fairseq dictionary semantics, causality, and SpeechPrompt's
input/deep prompts (docs/papers.md) checked against an explicit re-derivation of the attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.core.errors import BenchError
from bench.lms.model import DecoderLayer, UnitDictionary, UnitLanguageModel, UnitLMConfig


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    lm = UnitLanguageModel(UnitLMConfig.tiny(14, **kw)).eval()
    with torch.no_grad():  # randomise the layer norms too, so a swapped/ignored LN cannot go unnoticed
        for name, p in lm.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return lm


def _prompts(lm, L, seed=1):
    g = torch.Generator().manual_seed(seed)
    d = lm.cfg.embed_dim
    inp = torch.randn(1, L, d, generator=g)
    deep = [(torch.randn(L, d, generator=g), torch.randn(L, d, generator=g)) for _ in range(lm.cfg.num_layers)]
    return inp, deep


def test_transformer_lm_big_has_151_263_232_parameters():
    """SpeechPrompt v1 log: 151,417,856 shared params = 151,263,232 (ULM, vocab 104) + 154,624 (prompts, L=6)."""
    cfg = UnitLMConfig.transformer_lm_big()
    assert (cfg.vocab_size, cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.ffn_dim) == (104, 12, 1024, 16, 4096)
    lm = UnitLanguageModel(cfg)
    assert lm.num_parameters() == 151_263_232
    assert lm.num_parameters() + 25_600 * 6 + 1_024 == 151_417_856
    names = set(dict(lm.named_parameters()))
    for n in ("embed_tokens.weight", "layers.11.self_attn.q_proj.weight", "layers.0.self_attn_layer_norm.bias",
              "layers.3.fc1.weight", "layers.3.fc2.bias", "layers.3.final_layer_norm.weight", "layer_norm.weight"):
        assert n in names
    with torch.device("meta"):  # bench.results.params counts without allocating
        assert UnitLanguageModel(cfg).num_parameters() == 151_263_232


def test_dictionary_follows_fairseq(tmp_path):
    d = UnitDictionary.from_units(100)
    assert (d.bos, d.pad, d.eos, d.unk) == (0, 1, 2, 3) and len(d) == 104
    assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert d.unit_to_index(0) == 4 and d.unit_to_index(99) == 103
    assert d.index("nope") == d.unk
    with pytest.raises(BenchError, match="unit 100 is not in the unit dictionary"):
        d.unit_to_index(100)
    (tmp_path / "dict.txt").write_text("5 30\n2 20\n7 10 #fairseq:overwrite\n")
    loaded = UnitDictionary.load(tmp_path / "dict.txt")
    assert loaded.symbols[4:] == ["5", "2", "7"] and loaded.unit_to_index(2) == 5 and loaded.units() == [5, 2, 7]
    loaded.save(tmp_path / "again.txt")
    assert UnitDictionary.load(tmp_path / "again.txt") == loaded
    (tmp_path / "dup.txt").write_text("5 30\n5 20\n")
    with pytest.raises(BenchError, match="duplicate symbol"):
        UnitDictionary.load(tmp_path / "dup.txt")
    (tmp_path / "bad.txt").write_text("5\n")
    with pytest.raises(BenchError, match=r"bad.txt:1"):
        UnitDictionary.load(tmp_path / "bad.txt")


def test_logits_are_causal_and_padding_free():
    lm = _tiny()
    tokens = torch.randint(4, 14, (2, 10), generator=torch.Generator().manual_seed(3))
    changed = tokens.clone()
    changed[:, 6] = 4 + (changed[:, 6] - 3) % 10
    with torch.no_grad():
        a, b = lm(tokens), lm(changed)
        assert torch.equal(a[:, :6], b[:, :6]) and not torch.allclose(a[:, 6:], b[:, 6:])
        padded = tokens.clone()
        padded[1, 4:] = lm.dictionary.pad
        torch.testing.assert_close(lm(padded)[1, :4], lm(tokens[1:2, :4])[0], atol=1e-5, rtol=1e-5)


def _reference_prompted_logits(lm, tokens, inp, deep):
    """SpeechPrompt's prompted forward written out step by step (one sequence, explicit softmax):
    K = Concat(p_K, LN(h)[L:])·W_K, V = Concat(p_V, LN(h)[L:])·W_V, Q = LN(h)·W_Q, causal over prompt + tokens."""
    cfg = lm.cfg
    L, d, H = inp.size(1), cfg.embed_dim, cfg.num_heads
    hd = d // H
    pos = torch.arange(tokens.size(0)) + 2  # fairseq: first non-pad position is padding_idx + 1 = 2
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    sinus = torch.cat([torch.sin(pos[:, None] * freq), torch.cos(pos[:, None] * freq)], dim=1)
    x = torch.cat([inp[0], math.sqrt(d) * lm.embed_tokens.weight[tokens] + sinus])  # prompts: no positions
    n = x.size(0)
    for layer, (kp, vp) in zip(lm.layers, deep):
        a = layer.self_attn
        h = F.layer_norm(x, (d,), layer.self_attn_layer_norm.weight, layer.self_attn_layer_norm.bias)
        k_in, v_in = h.clone(), h.clone()
        k_in[:L], v_in[:L] = kp, vp
        q = (h @ a.q_proj.weight.T + a.q_proj.bias).view(n, H, hd)
        k = (k_in @ a.k_proj.weight.T + a.k_proj.bias).view(n, H, hd)
        v = (v_in @ a.v_proj.weight.T + a.v_proj.bias).view(n, H, hd)
        out = torch.zeros(n, H, hd)
        for i in range(n):
            for j in range(H):
                s = (k[: i + 1, j] @ q[i, j]) / math.sqrt(hd)
                out[i, j] = torch.softmax(s, 0) @ v[: i + 1, j]
        x = x + out.reshape(n, d) @ a.out_proj.weight.T + a.out_proj.bias
        h = F.layer_norm(x, (d,), layer.final_layer_norm.weight, layer.final_layer_norm.bias)
        x = x + torch.relu(h @ layer.fc1.weight.T + layer.fc1.bias) @ layer.fc2.weight.T + layer.fc2.bias
    x = F.layer_norm(x, (d,), lm.layer_norm.weight, lm.layer_norm.bias)
    return x[L:] @ lm.embed_tokens.weight.T


def test_input_and_deep_prompts_match_the_speechprompt_definition():
    lm = _tiny()
    inp, deep = _prompts(lm, L=3)
    tokens = torch.randint(4, 14, (2, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = lm(tokens, input_prompt=inp, deep_prompts=deep)
        plain = lm(tokens)
        for b in range(2):
            ref = _reference_prompted_logits(lm, tokens[b], inp, deep)
            torch.testing.assert_close(ours[b], ref, atol=1e-4, rtol=1e-4)
    assert ours.shape == plain.shape == (2, 8, 14)  # prompt positions dropped
    assert not torch.allclose(ours, plain)


def test_prompted_padded_batch_equals_unpadded_rows():
    lm = _tiny()
    inp, deep = _prompts(lm, L=4)
    tokens = torch.randint(4, 14, (2, 9), generator=torch.Generator().manual_seed(5))
    tokens[1, 5:] = lm.dictionary.pad
    with torch.no_grad():
        batch = lm(tokens, input_prompt=inp.expand(2, -1, -1), deep_prompts=deep)
        alone = lm(tokens[1:2, :5], input_prompt=inp, deep_prompts=deep)
    torch.testing.assert_close(batch[1, :5], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batch).all()


def test_separator_embedding_replaces_bos_before_scaling():
    lm = _tiny()
    tokens = torch.tensor([[5, 6, 7, lm.dictionary.bos, 9, 10]])
    emb = lm.embed_tokens(tokens).detach()
    with torch.no_grad():
        torch.testing.assert_close(lm(tokens, token_embeddings=emb), lm(tokens))
        emb2 = emb.clone()
        emb2[0, 3] = torch.randn(lm.cfg.embed_dim)
        a, b = lm(tokens), lm(tokens, token_embeddings=emb2)
    assert torch.equal(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3:], b[:, 3:])


def _frozen_grads(lm, deep_on: bool, form: str = "prefix"):
    for p in lm.parameters():
        p.requires_grad_(False)
    inp, deep = _prompts(lm, L=2)
    leaves = [inp] + [t for kv in deep for t in kv]
    for t in leaves:
        t.requires_grad_(True)
    tokens = torch.randint(4, 14, (2, 6), generator=torch.Generator().manual_seed(6))
    logits = lm(tokens, input_prompt=inp, deep_prompts=deep if deep_on else None, deep_prompt_form=form)
    F.cross_entropy(logits.reshape(-1, 14), tokens.roll(-1, 1).reshape(-1)).backward()
    assert all(p.grad is None for p in lm.parameters())  # the LM stays frozen: no weight gradients at all
    return inp, deep


def test_frozen_lm_trains_only_the_prompts():
    lm = _tiny()
    inp, deep = _frozen_grads(lm, deep_on=True)
    assert all(k.grad.abs().sum() > 0 and v.grad.abs().sum() > 0 for k, v in deep)
    inp, _ = _frozen_grads(_tiny(), deep_on=False)  # input-only prompting
    assert inp.grad.abs().sum() > 0


def test_deep_prompts_in_every_layer_make_the_input_prompt_inert():
    """A consequence of SpeechPrompt's definition (§2.1 items 4-5): every layer, layer 0 included, overwrites the
    prompt positions' K/V inputs, so the input prompt only reaches the queries of prompt positions, which are
    dropped; its L·d parameters get zero gradient whenever deep prompts are on (in the published form; the
    prefix form, bench's default, does not compute those positions at all)."""
    lm = _tiny()
    inp, deep = _frozen_grads(lm, deep_on=True, form="overwrite")
    assert inp.grad is not None and inp.grad.abs().max() == 0
    inp, deep = _frozen_grads(lm, deep_on=True, form="prefix")
    assert inp.grad is None
    tokens = torch.randint(4, 14, (1, 6))
    with torch.no_grad():
        a = lm(tokens, input_prompt=inp, deep_prompts=deep)
        b = lm(tokens, input_prompt=torch.randn_like(inp), deep_prompts=deep)
    torch.testing.assert_close(a, b)


def test_prefix_form_equals_the_published_overwrite_form():
    """Same logits on real positions and same deep-prompt gradients, padded batch and training-mode LM dropout
    off (the frozen LM is in eval during prompt tuning)."""
    lm = _tiny()
    for p in lm.parameters():
        p.requires_grad_(False)
    tokens = torch.randint(4, 14, (3, 9), generator=torch.Generator().manual_seed(8))
    tokens[1, 6:] = tokens[2, 3:] = lm.dictionary.pad
    real = tokens.ne(lm.dictionary.pad)
    out = {}
    for form in ("overwrite", "prefix"):
        inp, deep = _prompts(lm, L=4)
        leaves = [t.requires_grad_(True) for kv in deep for t in kv]
        logits = lm(tokens, input_prompt=inp.expand(3, -1, -1), deep_prompts=deep, deep_prompt_form=form)
        logits[real].square().sum().backward()
        out[form] = (logits.detach()[real], [t.grad for t in leaves])
    torch.testing.assert_close(out["prefix"][0], out["overwrite"][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(out["prefix"][1], out["overwrite"][1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(BenchError, match="deep_prompt_form"):
        lm(tokens, input_prompt=inp, deep_prompts=deep, deep_prompt_form="bogus")


def test_prompt_errors_are_clear():
    lm = _tiny()
    inp, deep = _prompts(lm, L=3)
    tokens = torch.randint(4, 14, (1, 5))
    with pytest.raises(BenchError, match="deep prompts need an input prompt"):
        lm(tokens, deep_prompts=deep)
    with pytest.raises(BenchError, match="deep_prompts: expected 2"):
        lm(tokens, input_prompt=inp[:, :2], deep_prompts=deep)
    with pytest.raises(BenchError, match="input_prompt must be"):
        lm(tokens, input_prompt=inp[0])
    with pytest.raises(BenchError, match="max_positions"):
        UnitLanguageModel(UnitLMConfig.tiny(14, max_positions=4))(tokens)


def test_decoder_layer_is_reusable_standalone():
    """pGSLM's MS-TLM reuses the layer: dims in the constructor; hidden states, mask and (key, value) in forward."""
    torch.manual_seed(0)
    layer = DecoderLayer(16, 2, 32, dropout=0.0, activation="gelu").eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    y = layer(x, key_padding_mask=mask, prompt_kv=(torch.randn(2, 16), torch.randn(2, 16)))
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(layer(x[1:, :3])[0], layer(x, key_padding_mask=mask)[1, :3], atol=1e-6, rtol=1e-6)


def test_return_hidden_gives_final_layer_norm_output():
    lm = _tiny()
    tokens = torch.randint(4, 14, (1, 5))
    with torch.no_grad():
        logits, hidden = lm(tokens, return_hidden=True)
    assert hidden.shape == (1, 5, lm.cfg.embed_dim)
    torch.testing.assert_close(logits, hidden @ lm.embed_tokens.weight.T)
