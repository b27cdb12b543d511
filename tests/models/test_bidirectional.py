import pytest
import torch
from transformers import AutoModel

from bg2vec.models.bidirectional import attends_to_later_tokens, enable_bidirectional, is_bidirectional
from bg2vec.errors import ConfigError

from bg2vec.models.architectures import ARCHITECTURES as FAMILIES

from conftest import ATTENTION_GRID


def load_decoder(folder, attn_implementation):
    model = AutoModel.from_pretrained(folder, attn_implementation=attn_implementation, dtype=torch.float32)
    return model.eval()


def hidden(model, ids, mask=None):
    mask = torch.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("arch,attn", ATTENTION_GRID)
def test_last_token_changes_first_position(tiny_model_dirs, arch, attn):
    model = load_decoder(tiny_model_dirs[arch], attn)
    ids = torch.tensor([[1, 10, 11, 12, 13, 14]])
    changed = ids.clone()
    changed[0, -1] = 20
    causal_delta = (hidden(model, ids)[0, 0] - hidden(model, changed)[0, 0]).abs().max()
    assert causal_delta == 0, "the model should start out causal"
    enable_bidirectional(model)
    assert is_bidirectional(model)
    delta = (hidden(model, ids)[0, 0] - hidden(model, changed)[0, 0]).abs().max()
    assert delta > 1e-4


@pytest.mark.parametrize("arch,attn", ATTENTION_GRID)
def test_padding_changes_nothing_and_batch_of_one_matches_batch(tiny_model_dirs, arch, attn):
    model = enable_bidirectional(load_decoder(tiny_model_dirs[arch], attn))
    short = torch.tensor([[1, 30, 31, 32]])
    long = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    alone = hidden(model, short)[0]  # batch size 1, no padding
    for side in ("left", "right"):
        pad = torch.full((1, 3), 2)
        padded = torch.cat([pad, short], 1) if side == "left" else torch.cat([short, pad], 1)
        real = torch.cat([torch.zeros(1, 3), torch.ones(1, 4)], 1) if side == "left" else torch.cat(
            [torch.ones(1, 4), torch.zeros(1, 3)], 1
        )
        batch = torch.cat([padded, long])
        mask = torch.cat([real.long(), torch.ones_like(long)])
        states = hidden(model, batch, mask)[0]
        positions = slice(3, 7) if side == "left" else slice(0, 4)
        # Left padding shifts rotary positions (as in llm2vec), so there we check that the padded ids
        # themselves cannot leak in; right padding must reproduce the batch-of-one states exactly.
        other_pad = batch.clone()
        other_pad[0, mask[0] == 0] = 7
        assert torch.allclose(states[positions], hidden(model, other_pad, mask)[0][positions], atol=1e-6)
        if side == "right":
            assert torch.allclose(states[positions], alone, atol=1e-5), "batch of one differs from a padded batch"
        # The long row does not depend on the short one either.
        assert torch.allclose(hidden(model, long)[0], hidden(model, batch, mask)[1], atol=1e-5)


@pytest.mark.parametrize("arch", [name for name, family in FAMILIES.items() if "sdpa" in family.attn_implementations])
def test_eager_and_sdpa_agree(tiny_model_dirs, arch):
    ids = torch.tensor([[1, 10, 11, 12, 13, 14], [1, 20, 21, 22, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    eager = enable_bidirectional(load_decoder(tiny_model_dirs[arch], "eager"))
    sdpa = enable_bidirectional(load_decoder(tiny_model_dirs[arch], "sdpa"))
    a, b = hidden(eager, ids, mask), hidden(sdpa, ids, mask)
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)


def test_flag_is_saved_with_the_config(tiny_model_dirs, tmp_path):
    model = enable_bidirectional(load_decoder(tiny_model_dirs["mistral"], "sdpa"))
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert is_bidirectional(reloaded)
    assert attends_to_later_tokens(reloaded) and attends_to_later_tokens(reloaded, with_padding=True)


def test_architecture_that_ignores_the_flag_is_an_error(tiny_model_dirs, monkeypatch):
    """A decoder whose forward builds its own causal mask must not pass as bidirectional."""
    model = load_decoder(tiny_model_dirs["llama"], "eager")
    original_forward = model.forward

    def always_causal(*args, **kwargs):
        kwargs["is_causal"] = True  # what a model with hard-coded causal masking does
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", always_causal)
    with pytest.raises(ConfigError, match="bidirectional"):
        enable_bidirectional(model)
    assert not is_bidirectional(model), "a failed switch must leave the model causal, not half-switched"
