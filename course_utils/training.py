"""A small language-model training loop: random windows, AdamW with warmup and cosine decay, periodic evaluation,
a progress bar, and checkpoints that load with torch.load(weights_only=True). Also warmup-stable-decay training,
which gives the losses of several training lengths from one run (for scaling-law grids)."""
from __future__ import annotations

import contextlib
import copy
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


def wsd_factor(step: int, warmup: int, decay_start: int, total: int) -> float:
    """Multiplier of the peak learning rate in a warmup-stable-decay schedule: linear warmup over `warmup` steps,
    constant until `decay_start`, then linear decay that reaches 0 after step `total - 1`."""
    if not 0 < warmup <= decay_start < total:
        raise ValueError(f"need 0 < warmup <= decay_start < total, got {warmup}, {decay_start}, {total}")
    if step < warmup:
        return (step + 1) / warmup
    if step < decay_start:
        return 1.0
    return max(0.0, (total - step) / (total - decay_start))


def _adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases and norms)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                              {"params": vectors, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95), foreach=True)


def _optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    grad_clip: float, autocast=contextlib.nullcontext()) -> torch.Tensor:
    """Forward, backward, gradient clipping (if grad_clip) and one optimizer step; returns the loss."""
    with autocast:
        _, loss, *_ = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss


def train_lm_wsd(model: torch.nn.Module, train_data: torch.Tensor, *, step_counts: list[int], evaluate,
                 batch_size: int, block_size: int, lr: float = 3e-3, cooldown: float = 0.2, warmup: int = 20,
                 weight_decay: float = 0.1, grad_clip: float = 1.0, seed: int = 0,
                 device: torch.device | str = "cpu") -> dict[int, float]:
    """Train with a warmup-stable-decay schedule and return {steps: evaluate(model after that many steps)} for
    every count in `step_counts`, from one run.

    The schedule's trunk (warmup, then the peak rate) is shared: for a count S, a copy of the model and optimizer
    is taken off the trunk at step (1 - cooldown) S and decayed linearly to 0 by step S (Hu et al. 2024, MiniCPM;
    Hagele et al. 2024). The batch of step t is drawn from a generator seeded by (seed, t), so each result equals a
    separate WSD run of exactly S steps (tested), while the whole grid costs the longest trunk plus the cooldowns.
    The model is left at the end of the trunk (the peak rate, no cooldown)."""
    counts = sorted(set(step_counts))
    if not counts or counts[0] < 1 or any(int(c) != c for c in counts):
        raise ValueError(f"step_counts must be positive integers, got {step_counts}")
    if not 0 < cooldown < 1:
        raise ValueError(f"cooldown must be a fraction in (0, 1), got {cooldown}")
    starts = {c: round((1 - cooldown) * c) for c in counts}
    if any(not 0 < warmup <= starts[c] < c for c in counts):
        raise ValueError(f"every count needs 0 < warmup <= (1 - cooldown) * count < count; warmup={warmup}, "
                         f"cooldown={cooldown}, step_counts={counts}")
    device = torch.device(device)
    model.train()

    def step(m: torch.nn.Module, opt: torch.optim.Optimizer, t: int, factor: float) -> None:
        x, y = get_batch(train_data, batch_size, block_size,
                         torch.Generator().manual_seed(seed * 1_000_003 + t), device)
        for group in opt.param_groups:
            group["lr"] = lr * factor
        _optimizer_step(m, opt, x, y, grad_clip)

    optimizer = _adamw(model, lr, weight_decay)
    results, t = {}, 0
    for count in counts:
        while t < starts[count]:                                    # the trunk: warmup, then the peak rate
            step(model, optimizer, t, wsd_factor(t, warmup, starts[count], count))
            t += 1
        branch = copy.deepcopy(model)
        branch_optimizer = _adamw(branch, lr, weight_decay)
        branch_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        for s in range(t, count):                                   # the cooldown, on a copy
            step(branch, branch_optimizer, s, wsd_factor(s, warmup, starts[count], count))
        branch.eval()
        with torch.no_grad():
            results[count] = float(evaluate(branch))
    return results


@dataclass
class TrainHistory:
    steps: list[int] = field(default_factory=list)        # steps at which train_loss was recorded
    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0                                  # time in training steps (evaluation excluded)
    step_seconds: list[float] = field(default_factory=list)   # each step's time (their sum is `seconds`)

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
             decay: bool = True, lr_floor: float = 0.1) -> TrainHistory:
    """Train a next-token model (called as model(x, y) -> (logits, loss, ...)) with AdamW; returns its history.
    The learning rate warms up linearly, then decays by a cosine to lr_floor times the peak (or, with decay=False,
    stays constant)."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not 0 <= lr_floor <= 1:
        raise ValueError(f"lr_floor must be a fraction of the peak rate in [0, 1], got {lr_floor}")
    device = torch.device(device)
    optimizer = _adamw(model, lr, weight_decay)                     # weights decay; biases and norms do not
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine_factor(s, warmup, steps, lr_floor) if decay else min(1.0, (s + 1) / warmup))
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
        loss = _optimizer_step(model, optimizer, x, y, grad_clip, autocast)
        scheduler.step()
        loss_value = loss.item()                                   # synchronises the device
        elapsed = time.perf_counter() - start
        history.seconds += elapsed
        history.step_seconds.append(elapsed)
        history.tokens += x.numel()
        history.steps.append(step)
        history.train_loss.append(loss_value)
    return history
