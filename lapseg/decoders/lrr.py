"""LRR: Laplacian pyramid reconstruction and refinement (Ghiasi & Fowlkes, "Laplacian
Pyramid Reconstruction and Refinement for Semantic Segmentation", ECCV 2016, Sec. 3-4, Fig. 2).

Each pyramid level predicts class scores from one backbone feature through a learned-basis
*reconstruction* (Sec. 3): a 5x5 conv maps the feature to K coefficients per class, and
`ops.basis.reconstruct` places a K-dimensional per-class basis (8x8 kernels, stride 4) to
give scores at 4x the feature's resolution. Levels are combined coarse to fine by
*boundary-masked refinement* (Sec. 4):

    coarse = up2(prediction of the coarser level)            fixed bilinear x2
    mask   = maxpool9(softmax(coarse)) + maxpool9(-softmax(coarse))     boundary mask
    prediction = coarse + mask * reconstruction(this level)

Follows golnazghiasi/LRR (MatConvNet): `LRR4xTrainVGG16Pascal.m` (levels, factors),
`AddSubModel` (coefficient conv: 5x5, bias, zero init, on the backbone feature alone, not on
the coarser prediction; reconstruction `ConvTranspose` with the frozen bases resized to
2 x rec_upsample = 8, upsample 4, crop 2, grouped per class, channel c*K + k in group c;
`sum` of the x2 bilinear upsampled coarser prediction and the masked reconstruction),
`modelInitialization/LRRAddMasking.m` (softmax of the *upsampled* coarser prediction, 9x9
stride-1 max-pools of p and -p, product with the reconstruction) and
`AddDilationErosionObjectives` (optional heads, below).

Levels: on VGG-16 'fc7' (1/32), 'relu5_3' (1/16), 'relu4_3' (1/8), 'relu3_3' (1/4), the
reference's x37, x30, x23, x16; on ResNet 'res5' .. 'res2' (output stride 32). Level `s`
(its feature's stride) predicts at stride s/4, so the finest (stride 4) is at input
resolution, as in the reference, whose labels for the 32x..4x objectives are at 1/8..1/1.

Bases: one basis set, shared by every level as in the reference, held in the variable
`lrr_bases` `[8, 8, K, C]` (frozen in `'constants'` by default, the reference's
`learningRate = 0`; trainable by a flag). The module never reads a file: it initialises the
bases to windowed cosines (`ops.basis.cosine_bases`; basis 0 is the bilinear kernel), and
the bases fitted to the labels (`lapseg.bases.lrr_bases`: 32x32 label-patch PCA scaled as the
reference scales it, `(n lambda)^(1/4)` times the unit eigenvector) enter through
`lapseg.bases.attach`, which resizes them to 8x8 (`ops.pca.resize_bases`); training does this
before step 0. `basis='bilinear'` is the ablation baseline: one
coefficient per class (K = 1) and the fixed bilinear 8x8 kernel (`bilinear_kernel(8)`), i.e.
class scores predicted at the feature's resolution and upsampled x4 bilinearly, refined by
the same masks.

Learning rate: the coefficient convs are "hot". The top Hessian eigenvalue of the head's
loss at initialisation (`python -m benchmarks.lrr_curvature`, shapes, quarter-width ResNet-18)
is 2910 with the reference-scaled PCA bases against FCN-8s's 24: ~11x from the bases (flat-
field gain 6-14 instead of the bilinear kernel's 1), the rest from the 5x5 coefficient convs
(25x the fan-in of a 1x1 score layer) and four summed losses that all flow through the
coarsest level. Bases at unit flat-field gain (`lapseg.bases`, the default) bring it to 264;
the configs then train the coefficient convs at 0.1x the base rate, biases 2x, through the
per-group rates (`config.optimizer.lr_multipliers`, `lapseg.train.optim.lrr_multipliers`).
The reference trains them at 0.1, 0.05, 0.0125 and 0.1/512 of its base rate for 32x..4x
(`learning_rate_for_new_vars`), `recipes.lrr_reference_multipliers`.

Dilation/erosion objectives (Sec. 4.2, `dilation_erosion=True`): at the coarsest level two more
coefficient convs, reconstructed with the same bases plus a per-class bias (-1, and +1 for
class 0: the reference's background prior), give logits of the dilated and eroded class
masks, trained with a logistic loss (`lapseg.losses.lrr`).

Sizes: a feature of stride s has `ceil(H / s)` rows, so a coarser upsampled prediction can
be larger than the finer reconstruction when H is not a multiple of 32; it is cut at the
bottom/right (both are anchored at the top-left pixel), and 'logits' likewise (the reference
resizes inputs to multiples of 32 instead).

Deviations: training is end to end with every level's loss at once (the reference trains the
32x sub-model first, then adds the finer levels); the bases are scaled to unit flat-field gain
(the reference's absolute scale grows as n^(1/4) with the number of patches n, so it is
arbitrary; `basis.lrr_scale='reference'` restores it).

Outputs: `'logits'` `[N, H, W, C]` (the finest level, cut / upsampled to the input),
`'level_{s}'` `[N, 4 ceil(H/s), 4 ceil(W/s), C]` for every level stride s (e.g. 'level_32',
'level_16', 'level_8', 'level_4'), and with `dilation_erosion` `'dilation_{s}'`,
`'erosion_{s}'` at the coarsest level's size.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lapseg import backbones
from lapseg.layers import ConvBN
from lapseg.layers.frozen import frozen_or_trainable
from lapseg.ops import basis as basis_ops
from lapseg.ops import boundary
from lapseg.ops import normalize

# Pyramid levels, coarse to fine, per backbone family (the first that the backbone has).
LEVELS = (("fc7", "relu5_3", "relu4_3", "relu3_3"), ("res5", "res4", "res3", "res2"))
BASIS_KINDS = ("pca", "bilinear")


class LRR(nn.Module):
    """LRR: `[N, H, W, 3] -> {'logits', 'level_{s}' per level, ...}` (see the module docstring).

    Attributes:
      backbone: feature extractor returning a dict with the `features` features.
      num_classes: C.
      features: backbone feature names (the pyramid levels), coarse to fine; each stride half
        the previous one, the finest a multiple of `upsample`.
      basis: 'pca' (K label-fitted bases per class, variable `lrr_bases`, attached with
        `lapseg.bases.attach`) or 'bilinear' (the fixed bilinear baseline, K = 1).
      num_bases: K, bases per class (basis='bilinear' has K = 1).
      upsample: reconstruction factor of every level (4; basis kernels `2 upsample` wide).
      coefficient_kernel: size of the coefficient convs (5).
      boundary_masking: gate each refinement by the boundary mask (off: plain sum).
      mask_size: max-pool window of the boundary mask; None: `2 upsample + 1` (9).
      dilation_erosion: add the dilation/erosion heads at the coarsest level.
      trainable_basis: learn the basis ('params') instead of freezing it ('constants').
      dtype: compute dtype; param_dtype: parameter dtype.
    """

    backbone: nn.Module
    num_classes: int
    features: tuple[str, ...] = LEVELS[1]
    basis: str = "pca"
    num_bases: int = 10
    upsample: int = 4
    coefficient_kernel: int = 5
    boundary_masking: bool = True
    mask_size: int | None = None
    dilation_erosion: bool = False
    trainable_basis: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _basis(self) -> jnp.ndarray:
        """`[2u, 2u, K, C]`: `lrr_bases` (cosine defaults until fitted ones are attached), or
        the bilinear kernel (K = 1) as `bilinear_basis`."""
        size = 2 * self.upsample
        if self.basis == "bilinear":
            return frozen_or_trainable(
                self, "bilinear_basis", lambda: basis_ops.cosine_bases(size, 1, self.num_classes),
                trainable=self.trainable_basis, dtype=self.param_dtype)
        return frozen_or_trainable(
            self, "lrr_bases", lambda: basis_ops.cosine_bases(size, self.num_bases, self.num_classes),
            trainable=self.trainable_basis, dtype=self.param_dtype)

    def _strides(self) -> list[int]:
        if self.basis not in BASIS_KINDS:
            raise ValueError(f"LRR: basis must be one of {BASIS_KINDS}, got {self.basis!r}")
        if self.upsample < 2 or self.upsample % 2:
            raise ValueError(f"LRR: upsample must be even and >= 2, got {self.upsample}")
        strides = backbones.feature_strides(self.backbone, self.features, "LRR")
        halving = all(coarse == 2 * fine for coarse, fine in zip(strides, strides[1:]))
        if not halving or strides[-1] % self.upsample:
            raise ValueError(
                f"LRR: level strides {strides} of {self.features} must halve from level to level and end "
                f"at a multiple of upsample={self.upsample} (use output_stride 32 for ResNet)")
        return strides

    def _reconstruct(self, feature, basis, name, train):
        """Coefficient conv (K*C channels, channel c*K + k) then `ops.basis.reconstruct`, as
        class planes `[N, C, sH, sW]`."""
        num_bases = basis.shape[2]
        with jax.named_scope("lrr.coefficients"):
            coefficients = ConvBN(
                num_bases * self.num_classes, self.coefficient_kernel, use_bias=True, use_bn=False,
                activation=False, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                param_dtype=self.param_dtype, name=name)(feature, train)
        with jax.named_scope("lrr.reconstruct"):
            n, h, w, _ = coefficients.shape
            coefficients = coefficients.reshape(n, h, w, self.num_classes, num_bases).swapaxes(3, 4)
            return basis_ops.reconstruct(coefficients, basis, layout="NCHW")

    def __call__(self, images: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        """`images`: `[N, H, W, 3]`; `train`: BN batch statistics and dropout (rng 'dropout')."""
        normalize.check_images(images)
        chex.assert_axis_dimension(images, 3, 3)
        return self.decode(self.backbone(images, train), images.shape[1:3], train)

    @nn.compact
    def decode(self, features: dict, size: tuple[int, int],
               train: bool = False) -> dict[str, jnp.ndarray]:
        """The pyramid on backbone `features` (a dict by name); 'logits' at `size` `(H, W)`."""
        strides = self._strides()
        basis = self._basis().astype(self.dtype)
        mask_size = self.mask_size or 2 * self.upsample + 1

        # The pyramid runs on class planes [N, C, H, W]: its element-wise work then runs along
        # the W pixels of a row, which XLA's CPU loops vectorise, instead of over the C classes
        # of a pixel. Outputs are NHWC; the loss (lapseg.losses.lrr) reads them back as planes
        # and XLA cancels the two transposes (docs/throughput.md, "LRR's step").
        outputs, prediction = {}, None
        for name, stride in zip(self.features, strides):
            reconstruction = self._reconstruct(features[name], basis, f"coefficients_{name}", train)
            if prediction is None:
                prediction = reconstruction
            else:
                with jax.named_scope("lrr.upsample"):
                    coarse = basis_ops.bilinear_upsample(prediction, 2, layout="NCHW")
                    coarse = coarse[:, :, : reconstruction.shape[2], : reconstruction.shape[3]]
                with jax.named_scope("lrr.refine"):
                    prediction = _refine(coarse, reconstruction, mask_size if self.boundary_masking else 0)
            outputs[f"level_{stride}"] = _nhwc(prediction)

        if self.dilation_erosion:  # Sec. 4.2, at the coarsest level only (as the reference).
            def initial_bias(_):
                return jnp.full((self.num_classes,), -1.0, self.param_dtype).at[0].set(1.0)

            coarsest = self.features[0]
            for kind in ("dilation", "erosion"):
                bias = self.param(f"{kind}_bias", initial_bias).astype(self.dtype)
                logits = self._reconstruct(features[coarsest], basis, f"{kind}_coefficients_{coarsest}",
                                           train)
                outputs[f"{kind}_{strides[0]}"] = _nhwc(logits) + bias

        factor = strides[-1] // self.upsample
        if factor > 1:
            with jax.named_scope("lrr.upsample"):
                prediction = basis_ops.bilinear_upsample(prediction, factor, layout="NCHW")
        outputs["logits"] = _nhwc(prediction[:, :, : size[0], : size[1]])
        return outputs


def _refine_images(coarse, reconstruction, mask_size):
    """`coarse + mask * reconstruction` on class planes `[n, C, H, W]`, with `mask` the
    boundary mask of `softmax(coarse)` (mask_size 0: no mask, the plain sum)."""
    if not mask_size:
        return coarse + reconstruction
    with jax.named_scope("lrr.softmax"):
        probs = boundary.softmax(coarse, 1)
    with jax.named_scope("lrr.mask"):
        mask = boundary.boundary_mask(probs, mask_size, axes=(2, 3)).astype(coarse.dtype)
    return coarse + mask * reconstruction


# Elements of one image chunk's `[k, C, H, W]` planes in `_refine` on CPU (1 MiB of f32).
CHUNK_ELEMENTS = 2**18


def _refine(coarse, reconstruction, mask_size):
    """`_refine_images` over the batch; on CPU one chunk of images at a time.

    The softmax, the two separable window pools and their gradients are some 30 element-wise
    passes over the planes. Over the whole batch each pass streams them through main memory
    (a level's planes are 2.9 MiB per array in the default job, and the step's working set
    exceeds the L3 cache), and XLA fuses some passes into others that read their input at
    shifted positions, recomputing them. Over chunks of `CHUNK_ELEMENTS` (`lax.map` of a
    rematerialised body: the loop keeps each chunk's passes in cache, and its boundary keeps
    XLA from fusing the masks' gradient into the next level's upsampling) the level took
    about half the time (docs/throughput.md, "LRR's step"). Other platforms compute the whole
    batch at once (`lax.platform_dependent`).
    """
    n = coarse.shape[0]
    whole = functools.partial(_refine_images, mask_size=mask_size)
    if n == 1 or not mask_size:
        return whole(coarse, reconstruction)
    # Images per chunk: the most that fit CHUNK_ELEMENTS, and at least two chunks (XLA
    # inlines a loop of one iteration, and with it the boundary).
    k = max(d for d in range(1, n) if n % d == 0 and (d == 1 or d * coarse[0].size <= CHUNK_ELEMENTS))

    def chunked(coarse, reconstruction):
        split = lambda x: x.reshape(n // k, k, *x.shape[1:])  # noqa: E731
        body = jax.checkpoint(lambda xs: whole(*xs))
        return lax.map(body, (split(coarse), split(reconstruction))).reshape(coarse.shape)

    return lax.platform_dependent(coarse, reconstruction, cpu=chunked, default=whole)


def _nhwc(planes: jnp.ndarray) -> jnp.ndarray:
    """Class planes `[N, C, H, W]` -> `[N, H, W, C]`."""
    return jnp.transpose(planes, (0, 2, 3, 1))


# LRR's VGG-16 keeps the input geometry ("same" padding, no pad100).
_BACKBONE_DEFAULTS = {
    "vgg16": {"pad100": False},
    **{f"resnet{depth}": {"output_stride": 32} for depth in (18, 34, 50, 101, 152)},
}


def lrr(*, num_classes: int, backbone="resnet50", backbone_kwargs: dict | None = None, dtype=jnp.float32,
        param_dtype=jnp.float32, **decoder_fields) -> LRR:
    """LRR-4x on `backbone` (name or Module); `decoder_fields` are `LRR` fields, e.g.
    `basis='bilinear'`, `num_bases`, `dilation_erosion`, `features`."""
    net = backbones.build(backbone, backbone_kwargs, _BACKBONE_DEFAULTS, dtype=dtype,
                          param_dtype=param_dtype)
    info = net.feature_info()
    if "features" not in decoder_fields:
        family = next((names for names in LEVELS if all(n in info for n in names)), None)
        if family is None:
            raise ValueError(f"LRR: backbone features {list(info)} include none of {LEVELS}; pass features=")
        decoder_fields["features"] = family
    return LRR(backbone=net, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype, **decoder_fields)
