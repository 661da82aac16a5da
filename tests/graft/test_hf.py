"""GraftTrainer: a Hugging Face Trainer run trains on what Graft selects, weighted."""

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    TrainingArguments,
)

from graft import Graft, RandomSelector  # noqa: E402
from graft.hf import GraftTrainer  # noqa: E402
from tests.graft.helpers import EveryOther  # noqa: E402


def _model():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)  # fmt: skip
    return BertForSequenceClassification(config)  # built here: nothing downloaded


def _rows(n=48):
    g = torch.Generator().manual_seed(1)
    return [
        {"input_ids": torch.randint(0, 30, (6,), generator=g), "labels": i % 2}
        for i in range(n)
    ]


def _args(tmp_path, epochs=2):
    return TrainingArguments(str(tmp_path), num_train_epochs=epochs, report_to=[],
                             per_device_train_batch_size=8, use_cpu=True,
                             save_strategy="no", disable_tqdm=True, seed=3)  # fmt: skip


def test_the_trainer_trains_on_each_epochs_selection(tmp_path):
    rows = _rows()
    trainer = GraftTrainer(model=_model(), args=_args(tmp_path), train_dataset=rows,
                           selector=RandomSelector(0.5),
                           graft_options={"refresh_every": 1})  # fmt: skip
    trainer.train()
    graft = trainer.graft
    assert [h["epoch"] for h in graft.history] == [0, 1]
    assert graft.fraction_achieved() == 0.5
    steps = 2 * math.ceil(24 / 8)  # two epochs of the 24 selected, in batches of 8
    assert trainer.state.global_step == steps
    # The record: the samples of the last epoch's selection were trained on last.
    plain = Graft(None, rows, selector=RandomSelector(0.5), batch_size=8, seed=3,
                  refresh_every=1)  # fmt: skip
    plain.model = torch.nn.Linear(1, 1)
    plain.set_epoch(0)
    plain.set_epoch(1)
    last = set(plain.selected_indices.tolist())
    trained_last = set(torch.nonzero(graft.record.epoch == 1)[:, 0].tolist())
    assert trained_last == last


def test_the_loss_is_the_weighted_mean_of_the_per_sample_losses(tmp_path):
    seen = []

    class Recording(GraftTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            labels = inputs["labels"]
            with torch.no_grad():
                rest = {
                    k: v for k, v in inputs.items() if not k.startswith(("graft", "l"))
                }
                logits = model(**rest).logits
                plain = torch.nn.functional.cross_entropy(logits, labels)
            loss = super().compute_loss(model, inputs, return_outputs, **kwargs)
            seen.append((float(loss.detach()), float(plain)))
            return loss

    model = _model().eval()  # no dropout: the two forward passes agree
    doubled = EveryOther(weight=2.0)  # the loss must be twice the mean loss
    trainer = Recording(model=model, args=_args(tmp_path, epochs=1),
                        train_dataset=_rows(), selector=doubled)  # fmt: skip
    trainer.model.config.hidden_dropout_prob = 0.0
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    trainer.train()
    assert seen and all(
        loss == pytest.approx(2 * plain, rel=1e-5) for loss, plain in seen
    )


def test_a_trainer_without_training_data_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs a train_dataset"):
        GraftTrainer(model=_model(), args=_args(tmp_path), selector=RandomSelector(0.5))
