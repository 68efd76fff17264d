"""A small language-model training loop: random windows, AdamW with warmup and cosine decay, periodic evaluation,
a progress bar, and checkpoints that load with torch.load(weights_only=True)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows of a 1-D token tensor: inputs x (B, T) and next-token targets y (B, T)."""
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D tensor of token ids, got shape {tuple(data.shape)}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens: need more than block_size={block_size}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    index = starts[:, None] + torch.arange(block_size)            # (B, T): one gather instead of B slices
    return data[index].to(device), data[index + 1].to(device)


@torch.no_grad()
def estimate_loss(model, data: torch.Tensor, *, batch_size: int, block_size: int, iters: int = 10,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> float:
    """Mean cross-entropy of `model` over `iters` random batches of `data` (model in eval mode meanwhile)."""
    was_training = model.training
    model.eval()
    losses = [model(*get_batch(data, batch_size, block_size, generator, device))[1].item() for _ in range(iters)]
    model.train(was_training)
    return sum(losses) / len(losses)


def warmup_cosine_factor(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Multiplier of the peak learning rate: linear warmup, then cosine decay to `floor` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainHistory:
    steps: list[int] = field(default_factory=list)        # steps at which train_loss was recorded
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0                                  # time in training steps (evaluation excluded)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    step: int = 0) -> Path:
    """Write model (and optimizer) state as plain tensors and numbers, loadable with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "step": step}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    map_location: torch.device | str = "cpu") -> int:
    """Restore a checkpoint written by save_checkpoint (safely: weights_only=True); returns its step."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        if "optimizer" not in state:
            raise ValueError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def train_lm(model, train_data: torch.Tensor, val_data: torch.Tensor, *, steps: int, batch_size: int,
             block_size: int, lr: float = 3e-3, weight_decay: float = 0.1, warmup: int = 20, eval_every: int = 100,
             eval_iters: int = 10, grad_clip: float = 1.0, device: torch.device | str = "cpu",
             generator: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None,
             checkpoint_path: str | Path | None = None, progress: bool = True, desc: str = "training",
             decay: bool = True) -> TrainHistory:
    """Train a next-token model (called as model(x, y) -> (logits, loss, ...)) with AdamW; returns its history.
    The learning rate warms up linearly, then decays by a cosine (or, with decay=False, stays constant)."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    device = torch.device(device)
    matrices = [p for p in model.parameters() if p.dim() >= 2]     # weights decay; biases and norms do not
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                                   {"params": vectors, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine_factor(s, warmup, steps) if decay else min(1.0, (s + 1) / warmup))
    autocast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    history = TrainHistory()
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=2.0)
    for step in bar:
        if step % eval_every == 0 or step == steps - 1:
            history.eval_steps.append(step)
            history.val_loss.append(estimate_loss(model, val_data, batch_size=batch_size, block_size=block_size,
                                                  iters=eval_iters, generator=generator, device=device))
            bar.set_postfix(val_loss=f"{history.val_loss[-1]:.3f}")
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, model, optimizer, step)
        x, y = get_batch(train_data, batch_size, block_size, generator, device)
        start = time.perf_counter()
        with autocast:
            _, loss, *_ = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        loss_value = loss.item()                                   # synchronises the device
        history.seconds += time.perf_counter() - start
        history.tokens += x.numel()
        history.steps.append(step)
        history.train_loss.append(loss_value)
    return history
