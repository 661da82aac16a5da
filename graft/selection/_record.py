"""The per-sample record: what the training passes computed for each sample.

Every ``Graft.update(batch, losses)`` writes, for the batch's samples, the
per-sample loss, the epoch it was computed in and (when the selector wants
them) the embedding the forward hook saw entering the final ``nn.Linear``,
all detached and in float32, on the device the losses are on (no host copy
in the training step). A selection round can read them instead of running
a forward pass of its own. Memory: ``N * (4 d + 20)`` bytes for ``N``
samples, embeddings of width ``d`` and class labels (60000 samples, d = 64:
16 MB).
"""

from __future__ import annotations

import torch

__all__ = ["SampleRecord"]


class SampleRecord:
    """Loss, embedding and epoch of the last training pass of every sample.

    Attributes
    ----------
    loss : Tensor of shape (n_samples,) or None
        NaN for samples not recorded yet; None before the first write.
    embedding : Tensor of shape (n_samples, d) or None
        Zeros for samples not recorded yet; None when no embeddings are
        recorded. The input of the final ``nn.Linear``; where it has more
        than two dimensions (per token or pixel), their mean per sample.
        Recorded from the first step that has embeddings: a state loaded
        from a run without them leaves zeros for the samples it recorded.
    epoch : Tensor of shape (n_samples,) or None
        The epoch of each sample's record, -1 if never recorded.
    target : Tensor of shape (n_samples,) or None
        The class label of each recorded sample (-1: not recorded); None
        when the batches carry no integer class labels.

    Parameters
    ----------
    n_samples : int
        The size of the training dataset.

    Examples
    --------
    >>> import torch
    >>> from graft import SampleRecord
    >>> record = SampleRecord(5)
    >>> record.write(torch.tensor([1, 3]), torch.tensor([0.5, 2.0]), None, epoch=0)
    >>> record.loss.tolist()
    [nan, 0.5, nan, 2.0, nan]
    >>> record.epoch.tolist()
    [-1, 0, -1, 0, -1]
    """

    def __init__(self, n_samples: int) -> None:
        self.n_samples = n_samples
        self.loss = None
        self.embedding = None
        self.epoch = None
        self.target = None
        self._written = []  # index tensors written since the last sync

    def _put(self, rows, loss, epoch, embedding, target=None):
        """Write the entries of ``rows``, allocating what is not there yet.

        The record lives where the first losses were; the embeddings are
        allocated when the first ones come (e.g. after loading a state
        without them).
        """
        n = self.n_samples
        if self.loss is None:
            self.loss = torch.full((n,), float("nan"), device=loss.device)
            self.epoch = torch.full((n,), -1, dtype=torch.long, device=loss.device)
        device = self.loss.device
        if embedding is not None and self.embedding is None:
            self.embedding = torch.zeros((n, embedding.shape[1]), device=device)
        if target is not None and self.target is None:
            self.target = torch.full((n,), -1, dtype=torch.long, device=device)
        if embedding is not None and embedding.shape[1] != self.embedding.shape[1]:
            raise ValueError(
                f"the embeddings of this batch have width {embedding.shape[1]} but "
                f"the record holds width {self.embedding.shape[1]} (from earlier "
                "steps or a loaded state); the final nn.Linear must see the same "
                "embedding size in every training step."
            )
        rows = rows.to(device, non_blocking=True)
        self.loss[rows] = loss.detach().float().to(device)
        self.epoch[rows] = epoch.to(device) if torch.is_tensor(epoch) else epoch
        if embedding is not None:
            self.embedding[rows] = embedding.detach().float().to(device)
        if target is not None:
            self.target[rows] = target.to(device)

    def write(self, indices, losses, embeddings, epoch, targets=None):
        """Record ``losses`` (n,), ``embeddings`` (n, d) and ``targets`` of ``indices``.

        ``embeddings`` and ``targets`` may be None; targets are recorded only
        when they are integer class labels of shape (n,).
        """
        if targets is not None and (
            not isinstance(targets, torch.Tensor)
            or targets.shape != losses.shape
            or targets.is_floating_point()
            or targets.dtype == torch.bool
        ):
            targets = None
        self._put(indices, losses, epoch, embeddings, targets)
        self._written.append(indices)

    def sync(self, world_size, all_gather):
        """Every process's writes since the last sync, on every process."""
        if world_size == 1:
            self._written = []
            return
        rows = (
            torch.cat([i.cpu() for i in self._written])
            if self._written
            else torch.zeros(0, dtype=torch.long)
        )
        self._written = []
        mine = (
            rows,
            *(
                None if t is None else t[rows.to(t.device)].cpu()
                for t in self._fields()
            ),
        )
        for others, loss, epoch, embedding, target in all_gather(mine):
            if len(others):
                self._put(others, loss, epoch, embedding, target)

    def _fields(self):
        return self.loss, self.epoch, self.embedding, self.target

    @property
    def nbytes(self):
        """Bytes the record holds."""
        return sum(
            t.numel() * t.element_size() for t in self._fields() if t is not None
        )

    def state_dict(self):
        """CPU copies of the record (None before the first write)."""
        if self.loss is None:
            return None
        loss, epoch, embedding, target = (
            None if t is None else t.detach().cpu().clone() for t in self._fields()
        )
        return {"loss": loss, "epoch": epoch, "embedding": embedding, "target": target}

    def check_state(self, state):
        """Raise ValueError if ``state`` is not a record of ``n_samples`` samples."""
        if state is None:
            return
        n = self.n_samples
        if not isinstance(state, dict):
            raise ValueError(
                f"the state's record must be a dict or None, got "
                f"{type(state).__name__}; load a state saved by Graft.state_dict()."
            )
        loss, epoch, embedding = (state.get(k) for k in ("loss", "epoch", "embedding"))
        ok = (
            isinstance(loss, torch.Tensor)
            and isinstance(epoch, torch.Tensor)
            and loss.shape == (n,)
            and epoch.shape == (n,)
            and loss.is_floating_point()
            and not epoch.is_floating_point()
            and bool((epoch >= -1).all())
        )
        if ok and embedding is not None:
            ok = isinstance(embedding, torch.Tensor) and embedding.ndim == 2
            ok = (
                ok and embedding.shape[0] == n and bool(torch.isfinite(embedding).all())
            )
        target = state.get("target")
        if ok and target is not None:
            ok = (
                isinstance(target, torch.Tensor)
                and target.shape == (n,)
                and not target.is_floating_point()
                and bool((target >= -1).all())
            )
        if not ok:
            raise ValueError(
                f"the state's record does not fit this dataset of {n} samples (it "
                "needs loss and epoch of shape (n,), epochs >= -1, finite "
                "embeddings of shape (n, d) and integer targets >= -1 of shape "
                "(n,)); load a state saved with this dataset."
            )

    def load_state_dict(self, state, device):
        """Restore :meth:`state_dict` (checked by :meth:`check_state`) on ``device``."""
        self._written = []
        if state is None:
            self.loss = self.embedding = self.epoch = self.target = None
            return
        self.loss = state["loss"].float().to(device).clone()
        self.epoch = state["epoch"].long().to(device).clone()
        embedding = state.get("embedding")
        if embedding is not None:
            embedding = embedding.float().to(device).clone()
        self.embedding = embedding
        target = state.get("target")
        self.target = None if target is None else target.long().to(device).clone()
