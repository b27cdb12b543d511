import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from bg2vec.objectives.masking import IGNORE_INDEX
from bg2vec.objectives.mntp import MNTPModel, masked_token_accuracy, mntp_logits_at_labels, mntp_loss

from conftest import ARCHITECTURES


def test_loss_equals_hand_computed_cross_entropy_with_shift():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4)
    head = torch.nn.Linear(4, 7, bias=False)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 2] = 3  # predicted from position 1
    labels[1, 1] = 6  # predicted from position 0
    labels[1, 4] = 0  # predicted from position 3
    logits, targets = mntp_logits_at_labels(hidden, labels, head)
    loss = mntp_loss(logits, targets)

    expected = []
    for row, position, token in [(0, 2, 3), (1, 1, 6), (1, 4, 0)]:
        scores = hidden[row, position - 1] @ head.weight.T  # the output one position earlier
        expected.append(-(scores[token] - torch.logsumexp(scores, 0)))
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-6)
    assert logits.shape == (3, 7), "logits are computed only at the 3 labelled positions"


def test_label_at_position_zero_is_never_predicted():
    hidden = torch.randn(1, 3, 4)
    head = torch.nn.Linear(4, 5)
    labels = torch.tensor([[2, IGNORE_INDEX, IGNORE_INDEX]])
    logits, targets = mntp_logits_at_labels(hidden, labels, head)
    assert logits.shape[0] == 0
    loss = mntp_loss(logits, targets)
    assert loss.item() == 0.0


def test_accuracy_on_a_hand_made_case():
    labels = np.array([[IGNORE_INDEX, 5, IGNORE_INDEX, 7], [IGNORE_INDEX, IGNORE_INDEX, 9, IGNORE_INDEX]])
    # predictions[b, i] is the guess for token i+1
    predictions = np.array([[5, 0, 1], [0, 9, 0]])
    assert masked_token_accuracy(predictions, labels) == pytest.approx(2 / 3)
    # The Bg2Vec metric compared predictions[b, i] with labels[b, i] (no shift): nearly always wrong.
    unshifted = labels[:, :-1]
    selected = unshifted != IGNORE_INDEX
    assert (predictions[selected] == unshifted[selected]).mean() == 0.0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_at_labels_equals_full_logits_loss(tiny_model_dirs, arch):
    """Our loss matches transformers' own causal-LM loss (full logits, shifted inside) on the same labels."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[arch], dtype=torch.float32).eval()
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (3, 16))
    labels = torch.where(torch.rand(3, 16) < 0.4, ids, torch.full_like(ids, IGNORE_INDEX))
    labels[:, 0] = IGNORE_INDEX
    with torch.no_grad():
        reference = model(input_ids=ids, labels=labels).loss
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state
        softcap = getattr(model.config, "final_logit_softcapping", None)
        logits, targets = mntp_logits_at_labels(hidden, labels, model.get_output_embeddings(), softcap)
        ours = mntp_loss(logits, targets)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert logits.shape[0] == int((labels[:, 1:] != IGNORE_INDEX).sum())


def test_model_predictions_in_eval_mode(tiny_model_dirs):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"], dtype=torch.float32)
    model = MNTPModel(base.get_decoder(), base.get_output_embeddings()).eval()
    ids = torch.randint(3, 300, (2, 8))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 3] = ids[0, 3]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        full = base(input_ids=ids).logits
    assert out["predictions"].shape == (2, 7)
    assert out["predictions"][0, 2] == full[0, 2].argmax()
    assert (out["predictions"][labels[:, 1:] == IGNORE_INDEX] == IGNORE_INDEX).all()
    assert math.isfinite(out["loss"].item())


@pytest.mark.parametrize("softcap, train_head, gather", [(None, False, True), (30.0, True, True), (30.0, True, False)])
def test_chunked_loss_equals_the_gathered_loss_in_value_and_gradients(softcap, train_head, gather):
    """Chunks of 7 positions (gradients taken chunk by chunk in the forward pass) give the loss and the gradients
    (w.r.t. the decoder output and a trained LM head) of computing every labelled position's logits at once."""
    from bg2vec.objectives.mntp import chunked_mntp_loss

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(train_head)
    hidden = torch.randn(3, 12, 16, requires_grad=True)
    labels = torch.where(torch.rand(3, 12) < 0.8, torch.randint(50, (3, 12)), torch.full((3, 12), IGNORE_INDEX))

    reference = mntp_loss(*mntp_logits_at_labels(hidden, labels, head, softcap))
    expected = torch.autograd.grad(reference, [hidden] + ([head.weight] if train_head else []))
    chunked, _ = chunked_mntp_loss(hidden, labels, head, softcap, chunk_rows=7, gather=gather)
    got = torch.autograd.grad(chunked, [hidden] + ([head.weight] if train_head else []))
    assert torch.allclose(chunked, reference, atol=1e-6)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-6)

    with torch.no_grad():
        loss, predictions = chunked_mntp_loss(hidden, labels, head, softcap, chunk_rows=5, with_predictions=True)
        logits, targets = mntp_logits_at_labels(hidden, labels, head, softcap)
    assert torch.allclose(loss, reference, atol=1e-6)
    assert torch.equal(predictions[labels[:, 1:] != IGNORE_INDEX], logits.argmax(dim=-1))
    assert (predictions[labels[:, 1:] == IGNORE_INDEX] == IGNORE_INDEX).all()


def test_num_items_in_batch_divides_the_summed_loss():
    """The Trainer's count over the whole step replaces the batch's own: sum of token losses / count."""
    from bg2vec.objectives.mntp import chunked_mntp_loss

    torch.manual_seed(1)
    head = torch.nn.Linear(8, 20, bias=False)
    hidden = torch.randn(2, 6, 8, requires_grad=True)
    labels = torch.where(torch.rand(2, 6) < 0.6, torch.randint(20, (2, 6)), torch.full((2, 6), IGNORE_INDEX))
    logits, targets = mntp_logits_at_labels(hidden, labels, head)
    summed = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            loss, _ = chunked_mntp_loss(hidden, labels, head, num_items_in_batch=torch.tensor(17))
        assert torch.allclose(loss, summed / 17, atol=1e-6)
    expected = torch.autograd.grad(summed / 17, hidden)[0]
    loss, _ = chunked_mntp_loss(hidden, labels, head, chunk_rows=3, num_items_in_batch=17)
    assert torch.allclose(torch.autograd.grad(loss, hidden)[0], expected, atol=1e-6)


def test_chunked_loss_without_labels_is_zero_with_a_graph():
    from bg2vec.objectives.mntp import chunked_mntp_loss

    hidden = torch.randn(1, 3, 4, requires_grad=True)
    loss, _ = chunked_mntp_loss(hidden, torch.full((1, 3), IGNORE_INDEX), torch.nn.Linear(4, 5, bias=False))
    loss.backward()
    assert loss.item() == 0.0 and hidden.grad is not None
