"""Property-based tests (hypothesis) of the runtime's public API and of manifest validation, on the exported tiny
model: every input either gives finite results of the promised shape or raises ``ValueError`` / ``ModelError``
naming the argument; never another exception, never NaN/inf. Examples are derandomized (the same every run)."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from runtime import GRAPHS, JOINT_NAMES, ModelError, PosePrior, rotations
from runtime.manifest import validate_manifest
from runtime.prior import MAX_ABS

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
J = len(JOINT_NAMES)
SPECIAL = [
    0.0,
    -0.0,
    1.0,
    MAX_ABS,
    -MAX_ABS,
    np.nextafter(MAX_ABS, np.inf),
    1e39,
    -1e300,
    5e-324,
    float("nan"),
    float("inf"),
    -float("inf"),
]
SPECIAL32 = [
    0.0,
    -0.0,
    1.0,
    MAX_ABS,
    -MAX_ABS,
    float(np.nextafter(np.float32(MAX_ABS), np.float32(np.inf))),
    3e38,
    float(np.float32(1e-45)),
    float("nan"),
    float("inf"),
    -float("inf"),
]


@pytest.fixture(scope="module")
def prior(tiny_model):
    return PosePrior.load(tiny_model)


@pytest.fixture(scope="module")
def chunked(tiny_model):
    """The same model run in chunks of 64 rows."""
    return PosePrior.load(tiny_model, max_chunk_bytes=1)


def values(width: int, kind: str):
    """Pose-like numbers; anything up to the bound; or also beyond it / not finite."""
    special = SPECIAL if width == 64 else SPECIAL32
    within = st.one_of(
        st.floats(-2, 2, width=width),
        st.floats(-MAX_ABS, MAX_ABS, width=width),
        st.sampled_from([v for v in special if abs(v) <= MAX_ABS]),
    )
    return {
        "pose-like": st.floats(-2, 2, width=width),
        "within": within,
        "any": st.one_of(within, st.floats(allow_nan=True, allow_infinity=True, width=width), st.sampled_from(special)),
    }[kind]


def batches(per_item: tuple, max_batch: int = 6):
    """float32 or float64 arrays (B, *per_item), each drawn from one kind of ``values``."""
    return st.tuples(
        st.sampled_from([np.float32, np.float64]), st.sampled_from(["pose-like", "within", "any"])
    ).flatmap(
        lambda k: hnp.arrays(
            k[0],
            st.integers(1, max_batch).map(lambda b: (b,) + per_item),
            elements=values(32 if k[0] == np.float32 else 64, k[1]),
        )
    )


def acceptable(x: np.ndarray) -> bool:
    return bool(np.isfinite(x).all() and np.abs(x).max() <= MAX_ABS)


@SETTINGS
@given(x=batches((J, 6)))
def test_log_prob_of_any_6d_array(prior, x):
    if not acceptable(x):
        for method in (prior.log_prob, prior.log_prob_and_grad):
            with pytest.raises(ValueError, match=r"^poses( contain NaN or inf|: \|value\| .* exceeds)"):
                method(x)
        return
    log_p = prior.log_prob(x)
    lp, grad = prior.log_prob_and_grad(x)
    assert log_p.shape == lp.shape == (len(x),) and grad.shape == x.shape and grad.dtype == np.float32
    assert np.isfinite(log_p).all() and np.isfinite(lp).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(lp, log_p, rtol=1e-4, atol=1e-2)  # two graphs, one density


@SETTINGS
@given(w=hnp.arrays(np.float64, st.integers(1, 5).map(lambda b: (b, 3 * J)), elements=st.floats(-100, 100)))
def test_axis_angle_is_periodic_and_finite(prior, w):
    """w and w (1 + 2 pi / |w|) per joint are the same rotation: the same log p; the gradient is finite."""
    lp, g = prior.log_prob_and_grad(w, rep="axis_angle")
    assert g.shape == w.shape and np.isfinite(lp).all() and np.isfinite(g).all()
    wj = w.reshape(-1, J, 3)
    t = np.linalg.norm(wj, axis=-1, keepdims=True)
    turned = np.where(t > 1e-3, wj * (1 + 2 * np.pi / np.maximum(t, 1e-3)), wj).reshape(w.shape)
    np.testing.assert_allclose(prior.log_prob(turned, rep="axis_angle"), lp, rtol=1e-5, atol=2e-3)
    R = rotations.axis_angle_to_matrix(wj)
    np.testing.assert_array_equal(prior.log_prob(R, rep="matrix"), prior.log_prob(rotations.matrix_to_6d(R)))


@SETTINGS
@given(R=batches((J, 3, 3), max_batch=3))
def test_matrices_are_rotations_or_refused(prior, R):
    try:
        log_p = prior.log_prob(R, rep="matrix")
    except ValueError as e:
        assert str(e).startswith("poses")
        assert not acceptable(R) or (rotations.rotation_error(R) > 1e-3).any()
    else:
        assert acceptable(R) and (rotations.rotation_error(R) <= 1e-3).all() and np.isfinite(log_p).all()


@SETTINGS
@given(
    z=st.integers(1, 6).flatmap(
        lambda b: st.sampled_from(["pose-like", "within", "any"]).flatmap(
            lambda kind: hnp.arrays(np.float64, (b, 126), elements=values(64, kind))
        )
    )
)
def test_latents(prior, z):
    if not acceptable(z):
        for call in (prior.latent_forward, lambda z: prior.sample(z=z)):
            with pytest.raises(ValueError, match=r"^z( contain NaN or inf|: \|value\| .* exceeds)"):
                call(z)
        return
    x, log_p = prior.latent_forward(z)
    assert x.shape == (len(z), J, 6) and np.isfinite(x).all() and np.isfinite(log_p).all()
    R = rotations.sixd_to_matrix(prior.sample(z=z))
    assert (rotations.rotation_error(R) < 1e-5).all()


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.sampled_from([2**40, 10**6 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
)


@SETTINGS
@given(
    n=ANYTHING,
    seed=st.one_of(ANYTHING, st.just(np.random.default_rng(0))),
    temperature=st.one_of(ANYTHING, st.floats(1e-3, 10)),
)
def test_sample_arguments(prior, n, seed, temperature):
    def valid_int(v, low):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    ok = (
        valid_int(n, 1)
        and n <= 10**6
        and (seed is None or isinstance(seed, np.random.Generator) or valid_int(seed, 0))
        and isinstance(temperature, (int, float))
        and not isinstance(temperature, bool)
        and math.isfinite(temperature)
        and 0 < temperature <= 1e4
    )
    if not ok:
        with pytest.raises(ValueError, match=r"^sample: (n|seed|temperature|give n)"):
            prior.sample(n, seed=seed, temperature=temperature)
        return
    x = prior.sample(n, seed=seed, temperature=temperature)
    assert x.shape == (n, J, 6) and x.dtype == np.float32
    assert (rotations.rotation_error(rotations.sixd_to_matrix(x)) < 1e-5).all()


@SETTINGS
@given(
    d6=hnp.arrays(
        np.float64,
        st.integers(1, 8).map(lambda k: (k, 6)),
        elements=st.one_of(st.floats(-1e300, 1e300), st.sampled_from([0.0, 1.0, -1.0, 1e-300])),
    ),
    scale=st.floats(1e-200, 1e200),
)
def test_gram_schmidt_gives_a_rotation_or_refuses(d6, scale):
    try:
        R = rotations.gram_schmidt(d6)
    except ValueError as e:
        assert "no rotation" in str(e)
        b1, b2 = (
            d6[:, :3] / np.abs(d6[:, :3]).max(-1, keepdims=True).clip(1e-300),
            d6[:, 3:] / np.abs(d6[:, 3:]).max(-1, keepdims=True).clip(1e-300),
        )
        sine = np.linalg.norm(np.cross(b1, b2), axis=-1) / (
            np.linalg.norm(b1, axis=-1) * np.linalg.norm(b2, axis=-1)
        ).clip(1e-300)
        assert (sine < 2e-6).any()  # some pair is (nearly) degenerate
        return
    assert rotations.rotation_error(R).max() < 1e-9
    with np.errstate(over="ignore", under="ignore"):
        scaled = d6 * scale
    if (
        np.isfinite(scaled).all()
        and (np.abs(scaled[:, :3]).max(-1) > 0).all()
        and (np.abs(scaled[:, 3:]).max(-1) > 0).all()
    ):
        np.testing.assert_allclose(rotations.gram_schmidt(scaled), R, atol=1e-9)  # scale-invariant where representable


@SETTINGS
@given(b=st.integers(1, 300), seed=st.integers(0, 2**32 - 1), rep=st.sampled_from(["6d", "matrix", "axis_angle"]))
def test_chunked_equals_whole(prior, chunked, b, seed, rep):
    aa = np.random.default_rng(seed).normal(0, 0.6, (b, J, 3))
    x = {"6d": rotations.axis_angle_to_6d(aa), "matrix": rotations.axis_angle_to_matrix(aa), "axis_angle": aa}[rep]
    for a, c in zip(prior.log_prob_and_grad(x, rep=rep), chunked.log_prob_and_grad(x, rep=rep)):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(prior.sample(b, seed=seed), chunked.sample(b, seed=seed))


# --- manifest validation ---------------------------------------------------------------------------------------------
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-300, 300),
        st.floats(allow_nan=False),
        st.text(max_size=8),
        st.sampled_from(list(JOINT_NAMES) + ["0" * 64, "batch"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def manifest(tiny_model):
    return json.loads((tiny_model / "manifest.json").read_text())


def _paths(obj, prefix=()):
    """Every key path of the required part of a manifest (free-form sections left out)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if prefix == () and k in ("conventions", "training", "exporter", "torch"):
                continue
            if len(prefix) == 2 and prefix[0] == "graphs" and k == "doc":
                continue
            if (
                prefix[:1] == ("files",)
                and len(prefix) == 1
                and k not in [g.file for g in GRAPHS.values()] + ["weights.bin"]
            ):
                continue
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data(), delete=st.booleans())
def test_manifest_validation(manifest, data, delete):
    """Any change to a required field -> ModelError naming that field's key (or a sha256/graph check downstream);
    an unchanged value passes; changes in the free-form sections always pass."""
    paths = sorted(_paths(manifest), key=repr)
    keys = data.draw(st.sampled_from(paths))
    edited = copy.deepcopy(manifest)
    parent = edited
    for k in keys[:-1]:
        parent = parent[k]
    new = data.draw(JSON)
    if delete and isinstance(parent, dict):
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = new
    file = Path("/model/manifest.json")
    if _same(edited, manifest):
        validate_manifest(edited, file, GRAPHS.values())
        return
    try:
        validate_manifest(edited, file, GRAPHS.values())
    except ModelError as e:
        assert str(e).startswith(f"{file}: ")
        return
    # what validation may let through: sha256 / size of a file is a plain replacement by another valid value
    # (caught when the files are read), or the replaced value is equal as JSON but not the same object
    assert keys[0] == "files" and keys[-1] in ("sha256", "bytes"), (keys, new)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(text=st.one_of(st.text(max_size=50), JSON.map(json.dumps), st.integers(1, 3000).map(lambda d: "[" * d)))
def test_load_with_any_manifest_text(tiny_model, tmp_path_factory, text):
    """Whatever manifest.json holds, loading raises ModelError (never another exception)."""
    model = tmp_path_factory.mktemp("m")
    for g in GRAPHS.values():
        (model / g.file).symlink_to(tiny_model / g.file)
    (model / "weights.bin").symlink_to(tiny_model / "weights.bin")
    (model / "manifest.json").write_text(text)
    with pytest.raises(ModelError, match="manifest.json: "):
        PosePrior.load(model)
