"""PPO maths (spec §5, §6) against hand-computed values. GAE uses γ = 0.9, λ = 0.95 (γλ = 0.855); clip = 0.1."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from learner.ppo import (
    cosine_lr,
    demo_nll,
    gae,
    importance_weights,
    normalize,
    policy_loss,
    scaled_sequence_logprob,
    token_logprobs,
    value_loss,
)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_gae_single_episode_ending_in_done():
    r, v, d = t(0.0, 0.0, 1.0), t(0.5, 0.6, 0.7), torch.tensor([False, False, True])
    adv, ret = gae(r, v, d, gamma=0.9, lam=0.95, last_value=2.0)  # last_value ignored: done at the end
    # t=2: δ = 1 - 0.7 = 0.3                      A = 0.3
    # t=1: δ = 0 + 0.9*0.7 - 0.6 = 0.03           A = 0.03 + 0.855*0.3    = 0.2865
    # t=0: δ = 0 + 0.9*0.6 - 0.5 = 0.04           A = 0.04 + 0.855*0.2865 = 0.2849575
    assert_close(adv, t(0.2849575, 0.2865, 0.3))
    assert_close(ret, t(0.7849575, 0.8865, 1.0))


def test_gae_bootstraps_with_last_value():
    r, v, d = t(0.0, 0.0, 1.0), t(0.5, 0.6, 0.7), torch.tensor([False, False, False])
    adv, ret = gae(r, v, d, gamma=0.9, lam=0.95, last_value=2.0)
    # t=2: δ = 1 + 0.9*2.0 - 0.7 = 2.1            A = 2.1
    # t=1: δ = 0.03                               A = 0.03 + 0.855*2.1    = 1.8255
    # t=0: δ = 0.04                               A = 0.04 + 0.855*1.8255 = 1.6008025
    assert_close(adv, t(1.6008025, 1.8255, 2.1))
    assert_close(ret, t(2.1008025, 2.4255, 2.8))


def test_gae_two_episodes_done_resets():
    r, v = t(0.0, 1.0, -1.0, 0.0), t(0.5, 0.6, 0.2, 0.3)
    d = torch.tensor([False, True, False, False])
    adv, ret = gae(r, v, d, gamma=0.9, lam=0.95, last_value=1.0)
    # t=3: δ = 0 + 0.9*1.0 - 0.3 = 0.6            A = 0.6
    # t=2: δ = -1 + 0.9*0.3 - 0.2 = -0.93         A = -0.93 + 0.855*0.6 = -0.417
    # t=1 (done): δ = 1 - 0.6 = 0.4               A = 0.4   (neither V(s_2) nor A_2 leaks back)
    # t=0: δ = 0 + 0.9*0.6 - 0.5 = 0.04           A = 0.04 + 0.855*0.4  = 0.382
    assert_close(adv, t(0.382, 0.4, -0.417, 0.6))
    assert_close(ret, t(0.882, 1.0, -0.217, 0.9))


def test_scaled_sequence_logprob_hand_values():
    logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0], [-0.5, -0.5, -1.0, -2.0, -8.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    start = torch.tensor([2, 5])
    out = scaled_sequence_logprob(logp, mask, start, cot_coef=0.5)
    # row 0: CoT = pos 0,1 -> 0.5*(-1-2) = -1.5; action = pos 2,3 (pos 4 masked) -> -3-4 = -7; total -8.5
    # row 1: no action (start = L) -> 0.5*(-0.5-0.5-1-2-8) = 0.5*(-12) = -6
    assert_close(out, t(-8.5, -6.0))
    out.sum().backward()
    assert_close(logp.grad, torch.tensor([[0.5, 0.5, 1.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5, 0.5]]))


def test_scaled_sequence_logprob_lambda_extremes():
    logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0]])
    mask = torch.tensor([[0, 1, 1, 1, 1]])  # a masked CoT token
    # start 3: CoT pos 1,2 -> -5; action pos 3,4 -> -9
    assert_close(scaled_sequence_logprob(logp, mask, torch.tensor([3]), 0.0), t(-9.0))
    assert_close(scaled_sequence_logprob(logp, mask, torch.tensor([3]), 1.0), t(-14.0))
    assert_close(scaled_sequence_logprob(logp, mask, torch.tensor([3]), 0.2), t(-10.0))  # 0.2*-5 - 9
    # start 0: everything is action, λ has no effect: -2-3-4-5 = -14
    assert_close(scaled_sequence_logprob(logp, mask, torch.tensor([0]), 0.3), t(-14.0))


def test_token_logprobs_hand_value():
    logits = torch.tensor([[[0.0, 0.2]]])
    # T = 0.2 -> z = [0, 1]; log p(1) = 1 - log(1 + e), log p(0) = -log(1 + e)
    lse = math.log(1.0 + math.e)
    assert_close(token_logprobs(logits, torch.tensor([[1]]), 0.2), torch.tensor([[1.0 - lse]]))
    assert_close(token_logprobs(logits, torch.tensor([[0]]), 0.2), torch.tensor([[-lse]]))


def test_token_logprobs_matches_manual_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=g)
    targets = torch.randint(0, 7, (2, 3), generator=g)
    out = token_logprobs(logits, targets, 0.2)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    for b in range(2):
        for i in range(3):
            z = [x / 0.2 for x in logits[b, i].tolist()]
            m = max(z)
            lse = m + math.log(sum(math.exp(x - m) for x in z))
            assert abs(out[b, i].item() - (z[targets[b, i]] - lse)) < 1e-5
    # T = 1 differs from T = 0.2
    assert not torch.allclose(token_logprobs(logits, targets, 1.0), out)
    # bf16 input still gives fp32 output
    assert token_logprobs(logits.bfloat16(), targets, 0.2).dtype == torch.float32


def pl(ratio, adv, **kw):
    new = torch.log(t(*ratio)).requires_grad_(True)
    loss, stats = policy_loss(new, torch.zeros(len(ratio)), t(*adv), clip=0.1, **kw)
    return loss, stats, new


def test_policy_loss_inside_clip():
    loss, _, new = pl([1.05], [2.0])
    assert_close(loss, torch.tensor(-2.1))  # -min(1.05*2, 1.05*2)
    loss.backward()
    assert_close(new.grad, t(-2.1))  # d(-r*A)/dlogp = -r*A
    assert_close(pl([0.95], [-2.0])[0], torch.tensor(1.9))  # -min(-1.9, -1.9)


def test_policy_loss_outside_clip():
    loss, _, new = pl([1.5], [2.0])
    assert_close(loss, torch.tensor(-2.2))  # -min(3.0, 1.1*2 = 2.2)
    loss.backward()
    assert_close(new.grad, t(0.0))  # clipped: no gradient
    assert_close(pl([1.5], [-2.0])[0], torch.tensor(3.0))  # -min(-3.0, -2.2): pessimistic, unclipped
    assert_close(pl([0.5], [-2.0])[0], torch.tensor(1.8))  # -min(-1.0, 0.9*-2 = -1.8)
    assert_close(pl([0.5], [2.0])[0], torch.tensor(-1.0))  # -min(1.0, 1.8)


def test_policy_loss_batch_mean_and_stats():
    loss, stats, _ = pl([1.05, 1.5, 0.5], [2.0, 2.0, 2.0])
    assert_close(loss, torch.tensor((-2.1 - 2.2 - 1.0) / 3))
    assert abs(stats["clip_frac"] - 2 / 3) < 1e-6
    assert abs(stats["ratio_max"] - 1.5) < 1e-6
    # approx_kl = mean((r-1) - log r)
    kl = ((0.05 - math.log(1.05)) + (0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 3
    assert abs(stats["approx_kl"] - kl) < 1e-6


def test_policy_loss_ratio_guard():
    # a ratio of 20 > 10: only the clipped term is used for every sample
    loss, _, _ = pl([20.0, 0.5], [-2.0, 2.0])
    assert_close(loss, torch.tensor((2.2 - 1.8) / 2))  # -(1.1*-2) = 2.2, -(0.9*2) = -1.8 -> mean 0.2
    # with the guard raised the usual min applies: -min(-40, -2.2) = 40, -min(1, 1.8) = -1 -> mean 19.5
    loss, _, _ = pl([20.0, 0.5], [-2.0, 2.0], ratio_guard=100.0)
    assert_close(loss, torch.tensor(19.5))


def test_policy_loss_weights():
    loss, _, _ = pl([1.0, 1.0], [1.0, 2.0], weights=t(0.5, 2.0))
    assert_close(loss, torch.tensor(-2.25))  # -(1*0.5 + 2*2)/2
    loss_none, stats, _ = pl([1.0, 1.0], [1.0, 2.0])
    assert_close(loss_none, torch.tensor(-1.5))
    assert stats["approx_kl"] == 0.0 and stats["clip_frac"] == 0.0


def test_value_loss_clipped_term_dominates():
    v = t(1.5).requires_grad_(True)
    loss = value_loss(v, t(1.0), t(2.0), 0.1)
    # unclipped (1.5-2)^2 = 0.25; clipped V = 1.1 -> (1.1-2)^2 = 0.81; max 0.81 -> 0.405
    assert_close(loss, torch.tensor(0.405))
    loss.backward()
    assert_close(v.grad, t(0.0))


def test_value_loss_unclipped_cases_and_mean():
    # V=1.05 within 0.1 of V_old=1 (value clip, spec §6.4): both terms (1.05-2)^2 = 0.9025 -> 0.5*0.9025
    assert_close(value_loss(t(1.05), t(1.0), t(2.0), 0.1), torch.tensor(0.45125))
    # unclipped (1.5-0)^2 = 2.25; clipped 1.1^2 = 1.21; max 2.25 -> 1.125
    assert_close(value_loss(t(1.5), t(1.0), t(0.0), 0.1), torch.tensor(1.125))
    batch = value_loss(t(1.05, 1.5, 1.5), t(1.0, 1.0, 1.0), t(2.0, 2.0, 0.0), 0.1)
    assert_close(batch, torch.tensor((0.45125 + 0.405 + 1.125) / 3))


def test_value_loss_without_a_clip_keeps_pulling_towards_the_return():
    v = t(1.5).requires_grad_(True)
    loss = value_loss(v, t(1.0), t(2.0), 0.0)  # where the clipped loss above had no gradient
    assert_close(loss, torch.tensor(0.125))  # 0.5 * (1.5 - 2)^2
    loss.backward()
    assert_close(v.grad, t(-0.5))


def test_importance_weights_cap_and_no_grad():
    prox = torch.tensor([0.0, math.log(2.0), math.log(10.0), math.log(0.5)], requires_grad=True)
    w = importance_weights(prox, torch.zeros(4), cap=3.0)
    assert_close(w, t(1.0, 2.0, 3.0, 0.5))  # exp(diff), 10 capped at 3, no lower cap
    assert not w.requires_grad


def test_normalize():
    a = t(1.0, 2.0, 3.0, 4.0)
    assert_close(normalize(a, 2.5, 1.0), t(-1.5, -0.5, 0.5, 1.5) / 1.00001)
    assert_close(normalize(a, torch.tensor(1.0), torch.tensor(2.0)), t(0.0, 1.0, 2.0, 3.0) / 2.00001)
    assert_close(normalize(t(3.0), 3.0, 0.0), t(0.0))  # std 0 does not divide by zero


def test_cosine_lr_endpoints_and_midpoint():
    assert cosine_lr(0, 10, 3e-5, 1e-6) == 3e-5
    assert abs(cosine_lr(5, 10, 3e-5, 1e-6) - (1e-6 + 3e-5) / 2) < 1e-15
    assert abs(cosine_lr(10, 10, 3e-5, 1e-6) - 1e-6) < 1e-15
    lrs = [cosine_lr(u, 10, 3e-5, 1e-6) for u in range(11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing over the schedule
    # symmetric around the midpoint: the drop over the first k updates equals the rise back over the last k
    assert abs((lrs[0] - lrs[2]) - (lrs[8] - lrs[10])) < 1e-15


def test_the_demo_nll_teaches_the_shared_tokens_and_a_legal_slot_only():
    token_logp = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -9.0, -9.0]], requires_grad=True)  # (B, R)
    response_mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    slot = torch.tensor([2, 3])  # shared: row 0 tokens 0-1, row 1 tokens 0-2; row 1's slot is past its end
    slot_logp = torch.tensor([-0.25, float("-inf")], requires_grad=True)  # (B,)
    nll = demo_nll(token_logp, response_mask, slot, slot_logp)
    assert float(nll) == pytest.approx((1 + 2 + 0.5 + 0.5 + 9 + 0.25) / 6)
    token_grad, slot_grad = torch.autograd.grad(nll, (token_logp, slot_logp))
    # no gradient reaches the demonstrated action's token, what follows it, or a padding position
    assert torch.equal(token_grad, torch.full((2, 4), -1 / 6) * torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0.0]]))
    assert torch.equal(slot_grad, torch.tensor([-1 / 6, 0.0]))  # a row without a slot adds nothing, not NaN
    # a slot at the answer's first token: only the slot is taught there
    assert float(demo_nll(token_logp, response_mask, torch.tensor([0, 3]), slot_logp)) == pytest.approx(10.25 / 4)
