import pytest
import torch

from course_utils import (GPT, GPTConfig, get_batch, load_checkpoint, save_checkpoint, track_peak_memory, train_lm,
                          train_lm_wsd)
from course_utils.training import estimate_loss, warmup_cosine_factor, wsd_factor


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16))


def test_shapes_loss_and_weight_tying(model):
    idx = torch.randint(20, (3, 10))
    logits, loss, cache = model(idx, idx)
    assert logits.shape == (3, 10, 20) and loss.dim() == 0 and len(cache) == 2
    assert cache[0][0].shape == (3, 2, 10, 8)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert abs(loss.item() - torch.log(torch.tensor(20.0)).item()) < 0.3  # near ln V at initialisation


def test_causality(model):
    idx = torch.randint(20, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (idx[0, 8] + 1) % 20
    a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6) and not torch.allclose(a[:, 8:], b[:, 8:])


def test_cached_forward_equals_full_forward(model):
    model.eval()
    idx = torch.randint(20, (2, 12))
    full = model(idx)[0]
    _, _, past = model(idx[:, :7])
    part, _, _ = model(idx[:, 7:], past=past)   # several new tokens against a cache (offset causal mask)
    assert torch.allclose(full[:, 7:], part, atol=1e-5)


def test_generate_with_and_without_cache_agree_even_past_the_block(model):
    prompt = torch.randint(20, (2, 3))
    for n in (5, 30):
        assert torch.equal(model.generate(prompt, n, greedy=True), model.generate(prompt, n, greedy=True, use_cache=False))
    g = torch.Generator().manual_seed(1)
    assert model.generate(prompt, 4, top_k=3, generator=g).shape == (2, 7)


def test_bad_config_and_arguments(model):
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 1, dtype=torch.long), 2, temperature=0)


def test_get_batch_targets_are_shifted_inputs():
    data = torch.arange(100)
    x, y = get_batch(data, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == (4, 8) and torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="more than block_size"):
        get_batch(torch.arange(5), 2, 8)
    with pytest.raises(ValueError, match="1-D"):
        get_batch(torch.zeros(3, 30), 2, 8)


def test_warmup_cosine_factor():
    assert warmup_cosine_factor(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine_factor(100, 10, 100) == pytest.approx(0.1)


def test_training_learns_a_pattern_and_checkpoints_round_trip(model, tmp_path):
    data = torch.tensor([0, 1, 2, 3, 4] * 200)
    ckpt = tmp_path / "ckpt.pt"
    history = train_lm(model, data, data, steps=60, batch_size=8, block_size=16, lr=1e-2, eval_every=20,
                       generator=torch.Generator().manual_seed(0), checkpoint_path=ckpt, progress=False)
    assert history.val_loss[-1] < 0.2 < history.val_loss[0]
    assert history.tokens == 60 * 8 * 16 and history.tokens_per_second > 0
    assert len(history.step_seconds) == 60 and min(history.step_seconds) > 0            # one time per step, and
    assert sum(history.step_seconds) == pytest.approx(history.seconds, rel=1e-9)         # they add up to the total
    save_checkpoint(ckpt, model, step=60)
    clone = GPT(model.config)
    assert load_checkpoint(ckpt, clone) == 60
    idx = torch.randint(5, (1, 10))
    assert torch.equal(model.eval()(idx)[0], clone.eval()(idx)[0])
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(ckpt, clone, torch.optim.SGD(clone.parameters(), lr=0.1))
    assert estimate_loss(clone, data, batch_size=4, block_size=16, iters=2) < 0.2


def test_train_lm_rejects_zero_steps(model):
    with pytest.raises(ValueError):
        train_lm(model, torch.arange(50) % 20, torch.arange(50) % 20, steps=0, batch_size=2, block_size=8)


def test_train_lm_decay_flag_sets_the_schedule(model, monkeypatch):
    schedules = []
    real = torch.optim.lr_scheduler.LambdaLR

    def spy(optimizer, factor):
        schedules.append(factor)
        return real(optimizer, factor)

    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", spy)
    data = torch.arange(200) % 20
    for decay in (True, False):
        train_lm(model, data, data, steps=10, batch_size=2, block_size=8, warmup=2, eval_every=100, progress=False,
                 decay=decay)
    cosine, constant = schedules
    assert cosine(0) == constant(0) == 0.5                      # warmup: step 1 of 2
    assert cosine(9) < 0.2 and constant(9) == 1.0               # the end of the run: decayed vs still at the peak
    schedules.clear()
    train_lm(model, data, data, steps=10, batch_size=2, block_size=8, warmup=2, eval_every=100, progress=False,
             lr_floor=0.0)
    assert schedules[0](9) < 0.05 and schedules[0](9) < cosine(9)   # decays towards 0 instead of 10% of the peak
    with pytest.raises(ValueError):
        train_lm(model, data, data, steps=10, batch_size=2, block_size=8, lr_floor=1.5)


def test_track_peak_memory_sees_allocations_and_frees():
    with track_peak_memory("cpu") as mem:
        a = torch.empty(1000, dtype=torch.float32)     # 4,000 bytes
        del a
        b = torch.empty(500, dtype=torch.float32)      # reuses nothing in the count: 2,000 live at most now
        c = b[:10]                                     # a view: no new storage
    assert mem.peak == 4000
    assert (mem.total, mem.count) == (6000, 2)                 # both allocations, though never live together
    with track_peak_memory() as mem2:
        x = torch.ones(256, 256)
        y = x @ x                                      # two 256 KiB tensors live together
    assert mem2.peak == 2 * 256 * 256 * 4
    with pytest.raises(ValueError, match="supports cpu and cuda"):
        track_peak_memory("mps")


def test_track_peak_memory_does_not_count_tensors_from_before_the_block():
    """A view or an in-place result of a tensor made before the block shares that tensor's storage: no new bytes.
    (Counting the whole storage of every op's output made slicing a 1 MB tensor look like a 1 MB allocation.)"""
    q = torch.randn(1, 4, 1024, 64)                        # 1 MiB, made before the block
    with track_peak_memory("cpu") as mem:
        s = q[:, :, 0:8] * 1.0                             # a slice (view) of q, then an 8 KiB result
    assert mem.peak == s.numel() * 4 == 8192
    layer, x = torch.nn.Linear(256, 256), torch.randn(4, 256)
    with torch.no_grad(), track_peak_memory("cpu") as mem:
        y = layer(x)                                       # the weight's transpose is a view, not a copy
    assert mem.peak == y.numel() * 4 == 4096
    with track_peak_memory("cpu") as mem:
        q.mul_(2.0)                                        # in place, and into an existing tensor with out=
        torch.add(q, 1.0, out=q)
    assert (mem.peak, mem.total, mem.count) == (0, 0, 0)
    with track_peak_memory("cpu") as mem:
        for _ in range(3):
            q = q * 2.0                                    # a fresh 1 MiB tensor each time, the last one freed
    assert (mem.total, mem.count) == (3 * q.nbytes, 3) and mem.peak == 2 * q.nbytes


def test_wsd_factor_warms_up_holds_and_decays_to_zero():
    assert [wsd_factor(s, 2, 6, 10) for s in range(10)] == [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    for bad in ((0, 6, 10), (7, 6, 10), (2, 10, 10)):
        with pytest.raises(ValueError, match="warmup <= decay_start < total"):
            wsd_factor(0, *bad)


def _wsd(counts, seed=0):
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    data = torch.arange(400) % 20
    val = estimate_loss_fn(data)
    return train_lm_wsd(m, data, step_counts=counts, evaluate=val, batch_size=4, block_size=8, lr=1e-2,
                        cooldown=0.25, warmup=2, seed=seed), m


def estimate_loss_fn(data):
    return lambda m: estimate_loss(m, data, batch_size=4, block_size=8, iters=2, generator=torch.Generator().manual_seed(1))


def test_train_lm_wsd_branches_equal_separate_runs_of_each_length():
    both, trunk = _wsd([8, 16])
    alone_8, _ = _wsd([8])
    alone_16, trunk_16 = _wsd([16])
    # Each cooldown branch is exactly the run of that length: the trunk is untouched by the branches taken off it.
    assert both == {8: alone_8[8], 16: alone_16[16]}, (both, alone_8, alone_16)
    assert all(torch.equal(a, b) for a, b in zip(trunk.parameters(), trunk_16.parameters()))
    assert both[16] < both[8]                                   # longer training, lower loss
    assert _wsd([8], seed=1)[0] != alone_8                      # the seed picks the batches


def test_train_lm_wsd_rejects_a_grid_it_cannot_branch(model):
    data = torch.arange(200) % 20
    for counts, message in (([0, 10], "positive integers"), ([4], "warmup <= \\(1 - cooldown\\)")):
        with pytest.raises(ValueError, match=message):
            train_lm_wsd(model, data, step_counts=counts, evaluate=len, batch_size=2, block_size=8, warmup=4)
    with pytest.raises(ValueError, match="cooldown"):
        train_lm_wsd(model, data, step_counts=[10], evaluate=len, batch_size=2, block_size=8, cooldown=1.0)
