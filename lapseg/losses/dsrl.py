"""DSRL's objective (Wang et al., CVPR 2020, Sec. 3.3, Eq. 3-6): `L_ce + w1 L_mse + w2 L_fa`.

- `L_ce`: masked cross-entropy of the SSSR logits (plus any of the base's auxiliary
  outputs named in `loss_config.weights`), `segmentation.deep_supervision`;
- `L_mse`: mean squared error between the SISR image and the normalised original image
  (`batch['image']`, full resolution), PyTorch `MSELoss` (mean over all elements);
- `L_fa`: feature affinity between FTM(SSSR) and the SISR image, `feature_affinity_loss`.

Config fields (with the paper's defaults): `weights` ({'logits': 1.0}), `class_weights`,
`mse_weight` (w1 = 0.1), `fa_weight` (w2 = 1.0), `fa_subsample` (16), `fa_p` (2), `fa_q` (1),
`fa_normalize` (True: each pixel's vector divided by its p-norm; False: the reference's).

`fa_subsample` = 16 is the reference's: Dootmaan/DSRL `utils/fa_loss.py`
`FALoss(subscale=0.0625)` average-pools both maps by `int(1 / subscale)` = 16 before the
affinity matrices, and its `train.py` calls `FALoss()` with that default, on the SSSR / SISR
outputs at the original resolution (as here); lapseg's earlier 8 had no source. Subsampling
keeps the `[hw, hw]` matrices affordable (1024 x 2048: 64 x 128 pixels, 256 MiB per f32
matrix and image). Deviations from that file, each to follow the paper's Eq. 5: each
pixel's vector is divided by its p-norm (the reference has those lines commented out;
`fa_normalize=False` follows it, and `recipes.dsrl_pspnet50` sets that), and
the L1 sum is divided by `N (hw)^2`, not `(hw)^2` (see `feature_affinity_loss`); the
weights are the paper's 0.1 / 1.0, not the reference's `w_sr = w_fa = 0.5` (`train.py`).
"""

import chex
import jax.numpy as jnp

from lapseg.losses.segmentation import deep_supervision


def _average_pool(x: jnp.ndarray, factor: int) -> jnp.ndarray:
    """Non-overlapping `factor x factor` mean, floor-sized (PyTorch `AvgPool2d(factor)`)."""
    n, height, width, channels = x.shape
    h, w = height // factor, width // factor
    if h == 0 or w == 0:
        raise ValueError(f"feature affinity: a {height}x{width} map is smaller than the "
                         f"subsampling factor {factor}")
    x = x[:, : h * factor, : w * factor].reshape(n, h, factor, w, factor, channels)
    return x.mean(axis=(2, 4))


def _p_norm(x: jnp.ndarray, p: float) -> jnp.ndarray:
    """`||x||_p` over the last axis, with a finite gradient at 0 (all-zero ReLU pixels)."""
    total = jnp.sum(jnp.abs(x) ** p, axis=-1, keepdims=True)
    positive = total > 0
    return jnp.where(positive, jnp.where(positive, total, 1.0) ** (1.0 / p), 0.0)


def feature_affinity(features: jnp.ndarray, *, subsample: int = 16, p: float = 2.0,
                     normalize: bool = True) -> jnp.ndarray:
    """Pairwise affinity of the (subsampled) pixels of a feature map.

    `S[n, i, j] = (F_i / ||F_i||_p)^T (F_j / ||F_j||_p)` over the pixels i, j of `F`, the
    map average-pooled by `subsample` (the reference's `AvgPool2d`); all-zero pixels
    get zero rows. Without `normalize`, `S[n, i, j] = F_i^T F_j` (Dootmaan/DSRL
    `utils/fa_loss.py`, whose normalising lines are commented out).

    Args:
      features: `[N, H, W, C]`.
      subsample: pooling factor (1 keeps the resolution).
      p: the normalising norm.
      normalize: divide each pixel's vector by its p-norm first.

    Returns:
      f32 `[N, hw, hw]`, `hw = (H // subsample) * (W // subsample)`.
    """
    chex.assert_rank(features, 4)
    x = _average_pool(features.astype(jnp.float32), subsample)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    if normalize:
        x = x / jnp.maximum(_p_norm(x, p), 1e-12)
    return jnp.einsum("nic,njc->nij", x, x)


def feature_affinity_loss(seg_features: jnp.ndarray, sr_features: jnp.ndarray, *,
                          subsample: int = 16, p: float = 2.0, q: float = 1.0,
                          normalize: bool = True) -> jnp.ndarray:
    """`L_fa = mean_{n, i, j} |S_seg[n, i, j] - S_sr[n, i, j]|^q` (Eq. 5; q = 1 is L1).

    The reference divides the L1 sum by `(hw)^2` only, i.e. sums over the batch; the mean
    here does not grow with the batch size (scale `fa_weight` by the per-device batch to
    match the reference). Memory: two `[N, hw, hw]` f32 matrices.

    Args:
      seg_features: `[N, H, W, C1]`, FTM of the SSSR output.
      sr_features: `[N, H, W, C2]`, the SISR output; same N, H, W.
      subsample, p, normalize: see `feature_affinity`.
      q: power of the absolute difference.

    Returns:
      f32 scalar.
    """
    chex.assert_rank([seg_features, sr_features], 4)
    chex.assert_equal_shape_prefix([seg_features, sr_features], 3)
    difference = (feature_affinity(seg_features, subsample=subsample, p=p, normalize=normalize)
                  - feature_affinity(sr_features, subsample=subsample, p=p, normalize=normalize))
    return jnp.mean(jnp.abs(difference) ** q)


def loss_for_config(loss_config, *, ignore_label: int):
    """`loss_fn(outputs, labels, batch) -> (loss, metrics)` for a DSRL model's training outputs.

    `outputs` needs 'sisr' and 'ftm' (train mode) and the keys of `loss_config.weights`;
    `batch['image']` is the normalised full-resolution input.
    """
    weights = dict(loss_config.get("weights", None) or {"logits": 1.0})
    class_weights = loss_config.get("class_weights", None)
    mse_weight = float(loss_config.get("mse_weight", 0.1))
    fa_weight = float(loss_config.get("fa_weight", 1.0))
    fa = dict(subsample=int(loss_config.get("fa_subsample", 16)),
              p=float(loss_config.get("fa_p", 2.0)), q=float(loss_config.get("fa_q", 1.0)),
              normalize=bool(loss_config.get("fa_normalize", True)))

    def loss_fn(outputs, labels, batch):
        missing = sorted({"sisr", "ftm"} - set(outputs))
        if missing:
            raise ValueError(f"DSRL loss needs the train-mode outputs {missing}; got {sorted(outputs)}")
        ce, metrics = deep_supervision(outputs, labels, weights=weights, ignore_label=ignore_label,
                                       class_weights=class_weights)
        image = batch["image"].astype(jnp.float32)
        chex.assert_equal_shape([outputs["sisr"], image])
        mse = jnp.mean((outputs["sisr"].astype(jnp.float32) - image) ** 2)
        affinity = feature_affinity_loss(outputs["ftm"], outputs["sisr"], **fa)
        metrics.update({"loss/ce": ce, "loss/mse": mse, "loss/fa": affinity})
        return ce + mse_weight * mse + fa_weight * affinity, metrics

    return loss_fn
