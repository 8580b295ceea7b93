"""The data model: construction, promotion, ragged and count constructors, and clear errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlimits as jl


def test_integer_input_is_promoted_to_float():
    s = jl.Samples(np.array([[1, 2, 3]], dtype=np.int32), counts=np.array([[1, 2, 1]]))
    assert jnp.issubdtype(s.rewards.dtype, jnp.floating)
    assert jnp.issubdtype(s.counts.dtype, jnp.floating)


def test_float32_and_float64_kept():
    assert jl.Samples(np.zeros((1, 2), np.float32)).dtype == jnp.float32
    assert jl.Samples(np.zeros((1, 2), np.float64)).dtype == jnp.float64


def test_one_dimensional_input_is_one_prompt():
    s = jl.Samples([1.0, 2.0, 3.0])
    assert (s.num_prompts, s.num_samples) == (1, 3)


def test_pytree_round_trip_and_jit():
    s = jl.Samples(np.ones((2, 3)), counts=np.ones((2, 3)), mask=np.ones((2, 3), bool))
    leaves, tree = jax.tree_util.tree_flatten(s)
    assert len(leaves) == 3  # rewards, counts, mask (None fields have no leaves)
    back = jax.tree_util.tree_unflatten(tree, leaves)
    assert isinstance(back, jl.Samples) and back.exact is False
    total = jax.jit(lambda x: x.rewards.sum() + x.counts.sum())(s)
    assert float(total) == 12.0


def test_immutable():
    s = jl.Samples(np.ones((1, 2)))
    with pytest.raises(AttributeError):
        s.rewards = None
    assert s.replace(scores=np.zeros((1, 2))).has_scores


def test_from_ragged_pads_with_mask():
    s = jl.Samples.from_ragged([[1.0, 2.0, 3.0], [5.0]], scores=[[0.0, 0.0, 1.0], [2.0]])
    assert s.rewards.shape == (2, 3)
    np.testing.assert_array_equal(s.mask, [[True, True, True], [True, False, False]])
    np.testing.assert_array_equal(s.draws(), [3, 1])


def test_from_counts_and_from_law():
    s = jl.Samples.from_counts([[0.0, 1.0], [2.0]], [[3, 1], [2]])
    np.testing.assert_array_equal(s.draws(), [4, 2])
    law = jl.Samples.from_law([[0.0, 1.0, 2.0]], [[0.2, 0.3, 0.5]])
    assert law.exact
    np.testing.assert_allclose(np.exp(law.log_weights), [[0.2, 0.3, 0.5]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rewards=[[0.0, np.nan, 1.0]]), r"rewards\[0, 1\] = .*nan.*prompt 0, sample 1"),
        (dict(rewards=[[0.0, 1.0], [np.inf, 2.0]]), r"rewards\[1, 0\].*prompt 1, sample 0"),
        (dict(rewards=[[0.0, 1.0]], scores=[[0.0, -np.inf]]), r"scores\[0, 1\].*not finite"),
        (dict(rewards=[[0.0, 1.0]], counts=[[1, -1]]), r"counts\[0, 1\].*negative"),
        (dict(rewards=[[0.0, 1.0]], counts=[[1, 1.5]]), r"counts\[0, 1\].*not a whole number"),
        (dict(rewards=[[0.0, 1.0]], log_weights=[[0.0, np.nan]]), r"log_weights\[0, 1\].*NaN or \+inf"),
        (dict(rewards=[[0.0, 1.0], [1.0, 2.0]], mask=[[True, True], [False, False]]), r"prompt 1 has no valid sample"),
        (dict(rewards=[[0.0, 1.0]], counts=[[0, 0]]), r"prompt 0 has no valid sample"),
        (dict(rewards=[[0.0, 1.0]], scores=[[0.0, 1.0, 2.0]]),
         r"scores has shape \(1, 3\) but rewards has shape \(1, 2\)"),
        (dict(rewards=np.zeros((2, 2, 2))), r"shape \[prompts, samples\]"),
        (dict(rewards=np.zeros((0, 3))), r"empty"),
        (dict(rewards=[["a", "b"]]), r"numeric"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        jl.Samples(**kwargs)


def test_masked_nan_is_allowed_and_ignored():
    s = jl.Samples([[0.0, 1.0, np.nan]], mask=[[True, True, False]])
    st = jl.tilt(s, [1.0])
    ref = jl.tilt(jl.Samples([[0.0, 1.0]]), [1.0])
    np.testing.assert_allclose(st.gain, ref.gain, rtol=1e-12)
    assert np.isnan(np.asarray(s.rewards)[0, 2])  # the user's data is not modified


def test_empty_ragged_prompt_rejected():
    with pytest.raises(ValueError, match="prompt 1 has no samples"):
        jl.Samples.from_ragged([[1.0], []])


@pytest.mark.parametrize("field", ["rewards", "counts", "log_weights", "magnitude", "empty"])
def test_checks_in_blocks_of_prompts_name_the_same_entry(monkeypatch, field):
    # The eager checks read blocks of whole prompts (no [P, N] float64 temporary); blocks of
    # 2 prompts must find the same first entry and total as one block.
    from jaxlimits import samples as S

    r = np.zeros((7, 3), np.float32)
    kw = dict(counts=np.ones((7, 3), np.float32), log_weights=np.zeros((7, 3), np.float32),
              mask=np.ones((7, 3), bool))
    if field == "rewards":
        r[4, 1] = r[6, 0] = np.nan
        kw["mask"][3, 2] = False
        r[3, 2] = np.inf  # masked: allowed
    elif field == "counts":
        kw["counts"][5, 2] = kw["counts"][2, 0] = -1.0
    elif field == "log_weights":
        kw["log_weights"][6, 2] = np.inf
        kw["counts"][6, 1] = 0.0
        kw["log_weights"][6, 1] = np.nan  # zero count: allowed
    elif field == "magnitude":
        r[5, 0] = 1e37
    else:
        kw["counts"][3] = 0.0
        kw["log_weights"][5] = -np.inf
    messages = []
    for entries in (2**18, 6):
        monkeypatch.setattr(S, "_CHECK_ENTRIES", entries)
        assert len(S._blocks(7, 3)) == (1 if entries > 21 else 4)
        with pytest.raises(ValueError) as e:
            jl.Samples(r, **kw)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    expected = {"rewards": r"rewards\[4, 1\] = .*nan.*prompt 4, sample 1\) \(1 more such entries\)",
                "counts": r"counts\[2, 0\] = .*-1.0.*negative.*\(1 more such entries\)",
                "log_weights": r"log_weights\[6, 2\] = .*inf.*prompt 6, sample 2\)$",
                "magnitude": r"rewards of prompt 5 have a magnitude of 1e\+37",
                "empty": r"prompt 3 has no valid sample .*\(1 more such prompts\)"}[field]
    assert re.search(expected, messages[0]), messages[0]
