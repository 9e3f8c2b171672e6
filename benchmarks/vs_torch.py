"""lapseg against PyTorch eager on the CPU: train and inference steps of the same networks.

    python -m benchmarks.vs_torch [--rounds 3] [--models resnet50_os8 pspnet fcn8s icnet]
                                  [--batch 2] [--size 256] [--threads N]
                                  [--torch-format channels_last|nchw|both] [--ablate]
    python -m benchmarks.vs_torch --profile pspnet      # per-op times of both sides
    python -m benchmarks.vs_torch --infer-scaling [--rounds 3]  # inference against image size

For each model, in interleaved rounds (every round runs every model, mode and side once,
after two warm-up calls each, the first of which compiles), the median seconds of:

- train: one SGD step (momentum 0.9, lr 0.01; fwd + bwd + update), BatchNorm in train mode
  with its running statistics updated, dropout on, float32, on a batch already on the
  device. lapseg's is `lapseg.train.step.jit_train_step` itself (what `lapseg train` runs)
  on a one-device mesh with the loss of `lapseg.losses.for_model` and the models' loss
  weights; it also computes its metrics (pixel accuracy, the gradient norm over every
  leaf), the state is donated. The ResNet-50 backbone alone has no logits for that step:
  its step is the same jit of `model.apply(train=True, mutable=['batch_stats'])`,
  `jax.value_and_grad` and the optax update, without the metrics, the loss
  `mean(res5^2) / 2`. PyTorch's is `zero_grad`, forward, loss, `backward`, `SGD.step` in
  eager mode (no metrics);
- infer: the forward in eval mode (running statistics, no dropout), one `jax.jit` for
  lapseg, under `torch.inference_mode()` for PyTorch; each returns the logits at input
  resolution (the backbone: 'res5').

Printed per model and mode: images/s of each side (with the max / min time of the rounds),
lapseg / torch as the median over the rounds of the time ratio within each round (above 1:
lapseg is faster; pairing the rounds cancels part of the load of other processes), and the
trainable parameter counts of both networks (they must agree: the PyTorch modules here are
written to lapseg's architecture). Models, on `--batch` random images of `--size`^2 with
21 classes:

  resnet50_os8  lapseg's ResNet-50 at output stride 8 (torchvision stem, DeepLab dilation:
                layer3 rate 2, layer4 rate 4)
  pspnet        PSPNet-R50: deep stem, OS 8, PPM (1, 2, 3, 6), head 512, aux head 256 on
                'res4' (loss weight 0.4), dropout 0.1
  fcn8s         FCN-8s on ResNet-18 (1x1 score layers, frozen bilinear x2/x2/x8 deconvs)
  icnet         ICNet with `lapseg.train.recipes.ICNET50` (half-width deep-stem ResNet-50 at
                OS 8, CFF 128, adaptive pyramid) and its cascade loss (0.4, 0.4, 1.0)

PyTorch gets as many intra-op threads as JAX's CPU client uses (the cores this process may
run on; `--threads N` restricts the process to N of them first), and runs channels-last
(NHWC, lapseg's layout; PyTorch's recommended CPU format for convnets) unless
`--torch-format nchw` (or `both`). `--ablate` adds lapseg-only rows with some of the fast
paths of `lapseg.layers.conv` switched off: the same model wrapped in
`conv_lib.WithFastPaths(model, fast_paths=paths)` (same variables; every `Conv` in it takes
only `paths`): 'xla conv' (every convolution XLA's: lapseg before them), then one path
added per row ('+ 1x1 dots', '+ dilated tap grads', '+ undilated tap grads'; lapseg as it
is adds 'shift'). `--profile MODEL` prints, instead
of the table, the per-op times of that model's steps: lapseg's from a `jax.profiler` trace
of the XLA:CPU thunks, summed per instruction of the optimised HLO and per category
(conv fwd / bwd, dot, reduce, layout, elementwise; inside scans or not), PyTorch's from `torch.profiler`.

Timings on a shared CPU are noisy: compare the ratios of one run, and rerun with more
rounds when the spread is large. The load average is printed with the table. PyTorch's
OpenMP threads suffer far more than XLA's thread pool from other processes on the same
cores (its steps take up to 10x longer on a loaded 2-core machine), so under load the
ratios flatter lapseg; `--threads 1` (one thread each side) is much less sensitive to it.
torch is imported only here and only when installed (else a one-line exit); torchvision
is not needed.

`--infer-scaling` prints instead how inference time grows with the image size and batch:
lapseg / torch (the median over interleaved rounds of the rounds' time ratios, above 1:
lapseg faster) of the eval-mode forward for ResNet-50 OS 8, PSPNet-R50, LRR-R50 (res5 to
res2, 10 cosine bases per class; its PyTorch twin reconstructs by grouped transposed
convolutions) and ICNet, one column per cell of `SCALING_CELLS`: 256, 512 and 1024 square
(and 1024x2048 for ICNet) at batch 1, and batch 1, 2 and 4 at 512. lapseg's model is
folded (`lapseg.infer.fold_batch_norm`, what `lapseg predict` and `lapseg export` run);
PyTorch's is eager with its BatchNorms. Each cell is compiled, warmed and timed on its own
(every model of the cell once per round), so that one cell's memory is freed before the
next. `--scaling-cells HxWxN,...` and `--scaling-models` pick other cells and models (a
smoke test: `--scaling-cells 64x64x1 --scaling-models lrr --rounds 1`).
"""

import argparse
import math
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lapseg import backbones, infer, losses, models
from lapseg.layers import conv as conv_lib
from lapseg.train import recipes
from lapseg.train import state as state_lib
from lapseg.train import step as step_lib

NUM_CLASSES = 21
IGNORE_LABEL = 255
MODELS = ("resnet50_os8", "pspnet", "fcn8s", "icnet")
# --infer-scaling: its models, and its cells `(height, width, batch)`, one column each
# (ICNet alone runs 1024x2048: its paper's Cityscapes size).
SCALING_MODELS = ("resnet50_os8", "pspnet", "lrr", "icnet")
SCALING_CELLS = ((256, 256, 1), (512, 512, 1), (1024, 1024, 1), (1024, 2048, 1),
                 (512, 512, 2), (512, 512, 4))
ICNET_ONLY_CELLS = ((1024, 2048, 1),)
LOSS_WEIGHTS = {
    "pspnet": {"logits": 1.0, "aux": 0.4},
    "fcn8s": {"logits": 1.0},
    "icnet": dict(recipes.ICNET_LOSS_WEIGHTS),
}


def lapseg_model(name):
    if name == "resnet50_os8":
        return backbones.create("resnet50", output_stride=8)
    if name == "pspnet":
        return models.create_model("pspnet", num_classes=NUM_CLASSES, backbone="resnet50")
    if name == "fcn8s":
        return models.create_model("fcn8s", num_classes=NUM_CLASSES, backbone="resnet18")
    if name == "icnet":
        return models.create_model("icnet", num_classes=NUM_CLASSES, **recipes.ICNET50)
    if name == "lrr":
        return models.create_model("lrr", num_classes=NUM_CLASSES, backbone="resnet50")
    raise ValueError(f"unknown model {name!r}; choose from {MODELS + SCALING_MODELS}")


# ----------------------------------------------------------------------------- lapseg side


def lapseg_loss(name, outputs, labels):
    """The backbone's stand-in loss (the models use `lapseg.losses.for_model`)."""
    del labels
    assert name == "resnet50_os8", name
    return 0.5 * jnp.mean(outputs["res5"] ** 2)


def _backbone_train_step(model, tx, rng):
    """The ResNet-50 backbone has no logits for `lapseg.train.step.train_step` (its loss and
    pixel accuracy): this is that step's core, `mean(res5^2) / 2` for the loss, without
    the metrics. State and batch as `train_step`'s."""

    def step(state, batch):
        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, **state.model_state}, batch["image"], train=True,
                rngs={"dropout": rng}, mutable=["batch_stats"])
            return lapseg_loss("resnet50_os8", outputs, None), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        opt_updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, u: p + u, state.params, opt_updates)
        return state.replace(step=state.step + 1, params=params,
                             model_state={**state.model_state, **updates},
                             opt_state=opt_state), {"loss": loss}

    return jax.jit(step, donate_argnums=0)


def lapseg_steps(name, model, images, labels):
    """`(train, infer, trainable parameter count, hlo)`: `train` and `infer` are zero-argument
    callables running one jitted step, blocking until its result is computed; `hlo(mode)` the
    optimised HLO text of that step (for `--profile`).

    The train step of the segmentation models is lapseg's own
    (`lapseg.train.step.jit_train_step` on a one-device mesh, the loss of
    `lapseg.losses.for_model` with the model's loss weights; loss, pixel accuracy and
    gradient norm computed every step, the state donated), as `lapseg train` runs it.
    """
    mesh = step_lib.make_mesh(1)
    variables = state_lib.init_variables(model, jax.random.key(0), images.shape)
    tx = optax.sgd(0.01, momentum=0.9)
    rng = jax.random.key(1)
    if name == "resnet50_os8":
        step = _backbone_train_step(model, tx, rng)
        train = step
    else:
        loss_fn = losses.for_model(name, {"weights": LOSS_WEIGHTS[name]},
                                   ignore_label=IGNORE_LABEL)
        step = step_lib.jit_train_step(mesh, model=model, tx=tx, loss_fn=loss_fn,
                                       ignore_label=IGNORE_LABEL)
        def train(state, batch):
            return step(state, batch, rng)
    batch = step_lib.shard_batch({"image": np.asarray(images), "label": np.asarray(labels)},
                                 mesh)

    @jax.jit
    def infer(variables, images):
        outputs = model.apply(variables, images, train=False)
        return outputs["res5" if name == "resnet50_os8" else "logits"]

    state = {"train": state_lib.create_train_state(jax.tree.map(jnp.copy, variables), tx)}

    def run_train():
        state["train"], metrics = train(state["train"], batch)
        jax.block_until_ready(metrics)

    def run_infer():
        jax.block_until_ready(infer(variables, batch["image"]))

    def hlo(mode):
        if mode == "infer":
            return infer.lower(variables, batch["image"]).compile().as_text()
        lowered = (step.lower(state["train"], batch) if name == "resnet50_os8"
                   else step.lower(state["train"], batch, rng))
        return lowered.compile().as_text()

    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    return run_train, run_infer, count, hlo


# ------------------------------------------------------------------ ablation (lapseg only)

# row name -> the fast paths of lapseg.layers.conv left on (the `fast_paths` setting of
# `conv_lib.WithFastPaths`), each adding one to the row above; lapseg as it is has all of
# `conv_lib.PATHS`.
ABLATIONS = {
    "xla conv": (),
    "+ 1x1 dots": ("pointwise",),
    "+ dilated tap grads": ("pointwise", "tap_grad"),
    "+ undilated tap grads": ("pointwise", "tap_grad", "tap_grad_undilated"),
}


def compiled_now(run):
    """Runs `run` twice (jit compiles on the first call; PyTorch's oneDNN caches its kernels
    on the first calls) and returns it."""
    run()
    run()
    return run


# ------------------------------------------------------------------------------ torch side


def torch_modules(torch):
    """PyTorch modules mirroring lapseg's ResNet, PSPNet, FCN (ResNet skips) and ICNet."""
    tnn, F = torch.nn, torch.nn.functional

    def conv_bn(cin, cout, k, stride=1, dilation=1, relu=True):
        layers = [tnn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation, bias=False),
                  tnn.BatchNorm2d(cout)]
        return tnn.Sequential(*layers, *([tnn.ReLU(inplace=True)] if relu else []))

    def up(x, size):
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)

    class Block(tnn.Module):
        def __init__(self, kind, cin, planes, stride, rate, projection):
            super().__init__()
            if kind == "bottleneck":
                cout = planes * 4
                self.body = tnn.Sequential(conv_bn(cin, planes, 1),
                                           conv_bn(planes, planes, 3, stride, rate),
                                           conv_bn(planes, cout, 1, relu=False))
            else:
                cout = planes
                self.body = tnn.Sequential(conv_bn(cin, planes, 3, stride, rate),
                                           conv_bn(planes, planes, 3, 1, rate, relu=False))
            self.shortcut = conv_bn(cin, cout, 1, stride, relu=False) if projection else None
            self.out_channels = cout

        def forward(self, x):
            shortcut = x if self.shortcut is None else self.shortcut(x)
            return F.relu(self.body(x) + shortcut)

    class ResNet(tnn.Module):
        """lapseg's `ResNet` (its stage plan: strides, rates, widths) in PyTorch."""

        def __init__(self, spec):
            super().__init__()
            kind, _ = backbones.resnet.DEPTHS[spec.depth]
            c = spec._channels  # pylint: disable=protected-access
            if spec.deep_stem:
                self.stem = tnn.Sequential(conv_bn(3, c(64), 3, 2), conv_bn(c(64), c(64), 3),
                                           conv_bn(c(64), c(128), 3))
                channels = c(128)
            else:
                self.stem, channels = conv_bn(3, c(64), 7, 2), c(64)
            self.pool = tnn.MaxPool2d(3, 2, 1)
            stages = []
            for planes, blocks, first_stride, rates in spec._stage_plan():  # pylint: disable=protected-access
                stage = []
                for index in range(blocks):
                    stride = first_stride if index == 0 else 1
                    expansion = 4 if kind == "bottleneck" else 1
                    projection = index == 0 and (stride != 1 or channels != planes * expansion)
                    stage.append(Block(kind, channels, planes, stride, rates[index], projection))
                    channels = stage[-1].out_channels
                stages.append(tnn.Sequential(*stage))
            self.stages = tnn.ModuleList(stages)

        def forward(self, x):
            features = {"stem": self.stem(x)}
            x = self.pool(features["stem"])
            for index, stage in enumerate(self.stages):
                x = stage(x)
                features[f"res{index + 2}"] = x
            return features

    class Backbone(tnn.Module):
        def __init__(self, spec):
            super().__init__()
            self.net = ResNet(spec)

        def forward(self, x):
            return {"res5": self.net(x)["res5"]}

    def head(cin, width, classes):
        return tnn.Sequential(conv_bn(cin, width, 3), tnn.Dropout2d(0.1),
                              tnn.Conv2d(width, classes, 1))

    class PSPNet(tnn.Module):
        def __init__(self, spec):
            super().__init__()
            self.backbone = ResNet(spec.backbone)
            info = spec.backbone.feature_info()
            c5, c4 = info["res5"].channels, info["res4"].channels
            self.bins = tuple(spec.bins)
            self.ppm = tnn.ModuleList(conv_bn(c5, c5 // len(self.bins), 1) for _ in self.bins)
            self.head = head(2 * c5, spec.channels, spec.num_classes)
            self.aux = head(c4, spec.aux_channels, spec.num_classes)

        def forward(self, images):
            features = self.backbone(images)
            x = features["res5"]
            size = x.shape[2:]
            x = torch.cat([x] + [up(conv(F.adaptive_avg_pool2d(x, b)), size)
                                 for b, conv in zip(self.bins, self.ppm)], 1)
            outputs = {"logits": up(self.head(x), images.shape[2:])}
            if self.training:
                outputs["aux"] = up(self.aux(features["res4"]), images.shape[2:])
            return outputs

    def bilinear_deconv(channels, factor):
        deconv = tnn.ConvTranspose2d(channels, channels, 2 * factor, factor, bias=False)
        deconv.weight.requires_grad_(False)  # lapseg's FCN keeps them constant by default
        return deconv

    class FCN(tnn.Module):
        """lapseg's crop-free FCN on ResNet features: score, x2 deconv, crop, add, ..."""

        def __init__(self, spec):
            super().__init__()
            self.backbone = ResNet(spec.backbone)
            info = spec.backbone.feature_info()
            self.names = tuple(spec.features)
            strides = [info[n].stride for n in self.names]
            self.factors = [a // b for a, b in zip(strides, strides[1:])] + [strides[-1]]
            self.scores = tnn.ModuleList(tnn.Conv2d(info[n].channels, spec.num_classes, 1)
                                         for n in self.names)
            self.ups = tnn.ModuleList(bilinear_deconv(spec.num_classes, f) for f in self.factors)

        def forward(self, images):
            features = self.backbone(images)
            x = self.scores[0](features[self.names[0]])
            for i, name in enumerate(self.names[1:]):
                skip = self.scores[i + 1](features[name])
                f = self.factors[i]
                x = self.ups[i](x)[:, :, f // 2: f // 2 + skip.shape[2], f // 2: f // 2 + skip.shape[3]]
                x = x + skip
            f, (h, w) = self.factors[-1], images.shape[2:]
            return {"logits": self.ups[-1](x)[:, :, f // 2: f // 2 + h, f // 2: f // 2 + w]}

    class CFF(tnn.Module):
        def __init__(self, c_low, c_high, width, classes):
            super().__init__()
            self.classifier = tnn.Conv2d(c_low, classes, 1)
            self.low = conv_bn(c_low, width, 3, dilation=2, relu=False)
            self.high = conv_bn(c_high, width, 1, relu=False)

        def forward(self, low, high):
            low = up(low, high.shape[2:])
            aux = self.classifier(low) if self.training else None
            return F.relu(self.low(low) + self.high(high)), aux

    def shrink(x):
        return up(x, [math.ceil(s / 2) for s in x.shape[2:]])

    class ICNet(tnn.Module):
        def __init__(self, spec):
            super().__init__()
            self.backbone = ResNet(spec.backbone)
            info = spec.backbone.feature_info()
            sub1, channels = [], 3
            for width in spec.sub1_channels:
                sub1.append(conv_bn(channels, width, 3, 2))
                channels = width
            self.sub1 = tnn.Sequential(*sub1)
            self.bins = tuple(spec.bins)
            self.sub4_conv = conv_bn(info["res5"].channels, spec.channels, 1)
            self.cff24 = CFF(spec.channels, info["res3"].channels, spec.branch_channels,
                             spec.num_classes)
            self.cff12 = CFF(spec.branch_channels, channels, spec.branch_channels,
                             spec.num_classes)
            self.classifier = tnn.Conv2d(spec.branch_channels, spec.num_classes, 1)

        def forward(self, images):
            sub1 = self.sub1(images)
            net = self.backbone
            x = net.pool(net.stem(shrink(images)))
            x = net.stages[0](x)
            sub2 = net.stages[1][0](x)  # conv3_1, forked
            x = net.stages[1][1:](shrink(sub2))
            x = net.stages[3](net.stages[2](x))
            size = x.shape[2:]
            x = x + sum(up(F.adaptive_avg_pool2d(x, b), size) for b in self.bins)
            sub4 = self.sub4_conv(x)
            sub24, aux_sub4 = self.cff24(sub4, sub2)
            sub124, aux_sub24 = self.cff12(sub24, sub1)
            coarse = self.classifier(up(sub124, [2 * s for s in sub124.shape[2:]]))
            outputs = {"logits": up(coarse, images.shape[2:])}
            if self.training:
                outputs.update(aux_sub4=aux_sub4, aux_sub24=aux_sub24, coarse_logits=coarse)
            return outputs

    class LRR(tnn.Module):
        """lapseg's LRR: per level a coefficient conv (K * C channels, channel c*K + k) and the
        reconstruction as a grouped transposed conv (`lapseg.ops.basis.reconstruct`'s
        equivalent); coarser levels upsampled x2 bilinearly (kernel 4, stride 2, pad 1)
        and refined through the boundary mask of their softmax."""

        def __init__(self, spec):
            super().__init__()
            self.backbone = ResNet(spec.backbone)
            info = spec.backbone.feature_info()
            classes, bases, factor = spec.num_classes, spec.num_bases, spec.upsample
            kernel = spec.coefficient_kernel
            self.names = tuple(spec.features)
            self.coefficients = tnn.ModuleList(
                tnn.Conv2d(info[n].channels, bases * classes, kernel, padding=kernel // 2)
                for n in self.names)
            self.reconstruct = tnn.ConvTranspose2d(bases * classes, classes, 2 * factor, factor,
                                                   factor // 2, groups=classes, bias=False)
            self.up2 = tnn.ConvTranspose2d(classes, classes, 4, 2, 1, groups=classes, bias=False)
            for fixed in (self.reconstruct, self.up2):  # lapseg's bases are constants
                fixed.weight.requires_grad_(False)
            self.mask_size = spec.mask_size or 2 * factor + 1
            self.factor = info[self.names[-1]].stride // factor

        def forward(self, images):
            features = self.backbone(images)
            prediction, size = None, self.mask_size
            for name, conv in zip(self.names, self.coefficients):
                reconstruction = self.reconstruct(conv(features[name]))
                if prediction is None:
                    prediction = reconstruction
                    continue
                coarse = self.up2(prediction)[:, :, :reconstruction.shape[2],
                                              :reconstruction.shape[3]]
                probs = F.softmax(coarse, 1)
                mask = (F.max_pool2d(probs, size, 1, size // 2)
                        + F.max_pool2d(-probs, size, 1, size // 2))
                prediction = coarse + mask * reconstruction
            if self.factor > 1:
                prediction = F.interpolate(prediction, scale_factor=self.factor,
                                           mode="bilinear", align_corners=False)
            return {"logits": prediction[:, :, :images.shape[2], :images.shape[3]]}

    return {"resnet50_os8": Backbone, "pspnet": PSPNet, "fcn8s": FCN, "icnet": ICNet,
            "lrr": LRR}


def torch_steps(torch, modules, name, spec, images, labels, memory_format):
    """`(train, infer, trainable parameter count)` for the PyTorch twin of `spec`, its
    weights and input in `memory_format` ('channels_last' or 'nchw')."""
    F = torch.nn.functional
    torch.manual_seed(0)
    net = modules[name](spec)
    x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).contiguous()
    if memory_format == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(np.asarray(labels, np.int64))
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)

    def loss_fn(outputs):
        if name == "resnet50_os8":
            return 0.5 * outputs["res5"].pow(2).mean()
        total = 0.0
        for key, weight in LOSS_WEIGHTS[name].items():
            logits = outputs[key]
            target = y
            if logits.shape[2:] != y.shape[1:]:  # nearest, top-left sample (lapseg's 'corner')
                target = F.interpolate(y[:, None].float(), size=logits.shape[2:],
                                       mode="nearest")[:, 0].long()
            total = total + weight * F.cross_entropy(logits, target, ignore_index=IGNORE_LABEL)
        return total

    def run_train():
        net.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x))
        loss.backward()
        optimizer.step()

    def run_infer():
        net.eval()
        with torch.inference_mode():
            net(x)

    return run_train, run_infer, sum(p.numel() for p in trainable)


# --------------------------------------------------------------------------------- profile

_INSTRUCTION = re.compile(r"(?:ROOT )?%([\w.\-]+) = (\([^=]*?\)|\S+) ([a-z][\w\-]*)\((.*)$")


def _hlo_instructions(text):
    """Optimised HLO text -> (entry computation's instruction names, {name: (opcode, type,
    rest of line)} over every computation, {computation: [instruction names]})."""
    computations, current, entry = {}, None, None
    for line in text.splitlines():
        header = re.match(r"^(ENTRY )?%([\w.\-]+) .*\{$", line)
        if header:
            current = header.group(2)
            computations[current] = []
            entry = current if header.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None and (match := _INSTRUCTION.match(line.strip())):
            computations[current].append(match.groups())
    instructions = {name: (opcode, shape, rest) for body in computations.values()
                    for name, shape, opcode, rest in body}
    members = {comp: [groups[0] for groups in body] for comp, body in computations.items()}
    return members.get(entry, []), instructions, members


def _category(name, instructions, members):
    """What one instruction does: 'conv fwd', 'conv bwd', 'dot', 'reduce / pool',
    'layout / copy' (data movement only), 'elementwise' (the rest)."""
    opcode, _, rest = instructions[name]
    ops = [opcode]
    called = re.search(r"calls=%([\w.\-]+)", rest)
    if called:
        ops = [instructions[n][0] for n in members.get(called.group(1), [])]
    backward = "transpose(" in rest or any(
        "transpose(" in instructions[n][2] and instructions[n][0] == "convolution"
        for n in (members.get(called.group(1), []) if called else []))
    if "convolution" in ops:
        return "conv bwd" if backward else "conv fwd"
    if "dot" in ops:
        return "dot"
    if any(op in ops for op in ("reduce", "reduce-window", "select-and-scatter")):
        return "reduce / pool"
    if set(ops) <= {"transpose", "copy", "bitcast", "parameter", "broadcast", "constant",
                    "slice", "concatenate", "pad", "reshape", "dynamic-slice",
                    "dynamic-update-slice"}:
        return "layout / copy"
    return "elementwise"


def _describe(name, instructions, members):
    """Short: opcode, shape, window and the op_name of an instruction (or its fusion's
    convolution / dot)."""
    opcode, shape, rest = instructions[name]
    called = re.search(r"calls=%([\w.\-]+)", rest)
    for inner in members.get(called.group(1), []) if called else []:
        if instructions[inner][0] in ("convolution", "dot"):
            opcode, shape, rest = instructions[inner]
            break
    window = re.search(r"window=\{([^}]*)\}", rest)
    labels = re.search(r"dim_labels=(\S+?),", rest)
    op_name = re.search(r'op_name="([^"]*)"', rest)
    return " ".join(x for x in (opcode, shape, window and window.group(1),
                                labels and labels.group(1),
                                op_name and op_name.group(1)[-60:]) if x)


def profile(name, torch, modules, images, labels, steps=2, top=15):
    """Per-op times of lapseg's train and infer steps of `name` (jax.profiler's trace of
    the XLA:CPU thunks, summed per entry instruction and per category) and PyTorch's
    (torch.profiler, self CPU time per op)."""
    import glob  # pylint: disable=import-outside-toplevel
    import gzip  # pylint: disable=import-outside-toplevel
    import json  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    model = lapseg_model(name)
    train, infer, _, hlo = lapseg_steps(name, model, jnp.asarray(images), jnp.asarray(labels))
    torch_train, torch_infer, _ = torch_steps(torch, modules, name, model, images, labels,
                                              "channels_last")
    for mode, run, torch_run in (("train", train, torch_train), ("infer", infer, torch_infer)):
        entry, instructions, members = _hlo_instructions(hlo(mode))
        compiled_now(run)
        with tempfile.TemporaryDirectory() as directory:
            start = time.perf_counter()
            with jax.profiler.trace(directory, create_perfetto_trace=True):
                for _ in range(steps):
                    run()
            wall = (time.perf_counter() - start) / steps
            (path,) = glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True)
            with gzip.open(path) as file:
                events = json.load(file)["traceEvents"]
        # Thunks: the entry's instructions and those of while loops' bodies (the scans),
        # whose time is not in their while's event. Fused computations make no thunks.
        thunks, looped, pending = set(entry), set(), list(entry)
        while pending:
            rest = instructions[pending.pop()][2]
            for body in re.findall(r"(?:body|condition)=%([\w.\-]+)", rest):
                for inner in members.get(body, []):
                    if inner not in thunks:
                        thunks.add(inner)
                        looped.add(inner)
                        pending.append(inner)
        per_op, per_category = {}, {}
        for event in events:
            if event.get("ph") == "X" and event["name"] in thunks:
                op = event["name"]
                if instructions[op][0] == "while":
                    continue  # its body's thunks are counted
                ms = event["dur"] / 1e3 / steps
                per_op[op] = per_op.get(op, 0.0) + ms
                category = _category(op, instructions, members)
                category = f"in scans: {category}" if op in looped else category
                per_category[category] = per_category.get(category, 0.0) + ms
        print(f"\n## lapseg {name} {mode}: {wall * 1e3:.0f} ms per step (traced), "
              f"thunks {sum(per_op.values()):.0f} ms")
        print("| category | ms |\n|---|---:|")
        for category, ms in sorted(per_category.items(), key=lambda kv: -kv[1]):
            print(f"| {category} | {ms:.1f} |")
        print(f"\ntop {top} instructions: ms, category, what")
        for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]:
            category = ("in scans: " if op in looped else "") + _category(op, instructions,
                                                                           members)
            print(f"  {ms:8.1f}  {category:14s} "
                  f"{_describe(op, instructions, members)}")

        compiled_now(torch_run)
        start = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                torch_run()
        wall = (time.perf_counter() - start) / steps
        print(f"\n## torch {name} {mode}: {wall * 1e3:.0f} ms per step (profiled); "
              f"self CPU ms per step by op")
        averages = sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)
        for average in averages[:top]:
            print(f"  {average.self_cpu_time_total / 1e3 / steps:8.1f}  {average.key} "
                  f"(x{average.count // steps})")


# ------------------------------------------------------------------------------------ main


# ------------------------------------------------------------------ --infer-scaling


def parse_cells(text):
    """`'256x256x1,512x512x2'` -> `((256, 256, 1), (512, 512, 2))`; a ValueError otherwise."""
    cells = []
    for item in text.split(","):
        try:
            height, width, batch = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"--scaling-cells takes HxWxN,..., got {item!r}") from None
        if min(height, width, batch) < 1:
            raise ValueError(f"--scaling-cells: sizes and batch must be positive, got {item!r}")
        cells.append((height, width, batch))
    return tuple(cells)


def lapseg_folded_infer(name, model, images):
    """A zero-argument callable running lapseg's folded eval-mode forward on `images` once
    (jitted, blocking), and the shape of what it returns ('res5' for the backbone)."""
    variables = state_lib.init_variables(model, jax.random.key(0), images.shape)
    folded_model, folded = infer.fold_batch_norm(model, variables, image_shape=images.shape)
    key = "res5" if name == "resnet50_os8" else "logits"
    forward = jax.jit(lambda v, x: folded_model.apply(v, x, train=False)[key])
    x = jnp.asarray(images)

    def run():
        jax.block_until_ready(forward(folded, x))

    return run, jax.eval_shape(forward, folded, x).shape


def infer_scaling(args, torch, modules):
    """Prints lapseg / torch of the eval-mode forward for each model and cell (see the
    module docstring): per cell, every model of both sides compiled and warm, then
    `args.rounds` interleaved rounds."""
    cells = parse_cells(args.scaling_cells) if args.scaling_cells else SCALING_CELLS
    names = args.scaling_models
    rng = np.random.default_rng(0)
    ratios, medians = {}, {}
    for height, width, batch in cells:
        images = rng.standard_normal((batch, height, width, 3)).astype(np.float32)
        labels = np.zeros((batch, height, width), np.int32)
        runs = {}
        for name in names:
            if (height, width, batch) in ICNET_ONLY_CELLS and name != "icnet":
                continue
            model = lapseg_model(name)
            ours, shape = lapseg_folded_infer(name, model, images)
            theirs = torch_steps(torch, modules, name, model, images, labels,
                                 args.torch_format if args.torch_format != "both"
                                 else "channels_last")[1]
            runs[name] = (compiled_now(ours), compiled_now(theirs))
            print(f"{height}x{width} batch {batch}: {name} compiled and warm (lapseg out "
                  f"{shape})", flush=True)
        times = {name: ([], []) for name in runs}
        for _ in range(args.rounds):
            for name, fns in runs.items():
                for side, fn in enumerate(fns):
                    start = time.perf_counter()
                    fn()
                    times[name][side].append(time.perf_counter() - start)
        for name, (ours, theirs) in times.items():
            cell = (name, height, width, batch)
            ratios[cell] = statistics.median(t / o for o, t in zip(ours, theirs))
            medians[cell] = (statistics.median(ours), statistics.median(theirs))
        print(f"{height}x{width} batch {batch}: {args.rounds} rounds done", flush=True)

    columns = [f"{h}x{w} b{n}" for h, w, n in cells]
    print(f"\nlapseg (BatchNorm folded) / torch eager ({args.torch_format}), inference, f32, "
          f"median of {args.rounds} interleaved rounds' time ratios (above 1: lapseg "
          f"faster); {jax.devices()[0].platform} x {len(os.sched_getaffinity(0))} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    for title, cell_text in (
            ("lapseg / torch", lambda c: f"{ratios[c]:.2f}"),
            ("median ms, lapseg / torch", lambda c: f"{1e3 * medians[c][0]:.0f} / "
                                                    f"{1e3 * medians[c][1]:.0f}")):
        print(f"\n{title}\n| model | " + " | ".join(columns) + " |")
        print("|---|" + "---:|" * len(columns))
        for name in names:
            row = [cell_text((name, *c)) if (name, *c) in ratios else "-" for c in cells]
            print(f"| {name} | " + " | ".join(row) + " |")


def _import_torch():
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--torch-format", default="channels_last",
                        choices=("channels_last", "nchw", "both"),
                        help="PyTorch's memory format (channels_last: NHWC like lapseg)")
    parser.add_argument("--threads", type=int, default=None,
                        help="run on this many of the process's cores (both sides get one "
                        "thread per core; default: every core this process may use)")
    parser.add_argument("--profile", choices=MODELS, default=None,
                        help="instead of the table: per-op times of one model's steps, "
                        "lapseg's (jax.profiler) and PyTorch's (torch.profiler)")
    parser.add_argument("--ablate", action="store_true",
                        help="add lapseg-only rows without some fast paths of "
                        "lapseg.layers.conv (for every model timed)")
    parser.add_argument("--infer-scaling", action="store_true",
                        help="instead of the table: lapseg (folded) / torch inference for "
                        "each image size and batch of --scaling-cells")
    parser.add_argument("--scaling-models", nargs="*", default=list(SCALING_MODELS),
                        choices=tuple(dict.fromkeys(SCALING_MODELS + MODELS)))
    parser.add_argument("--scaling-cells", default="",
                        help="HxWxN,... (default: 256, 512, 1024 square and 1024x2048 "
                        "(ICNet) at batch 1, batch 2 and 4 at 512)")
    args = parser.parse_args()
    if args.scaling_cells:
        try:
            parse_cells(args.scaling_cells)
        except ValueError as err:
            parser.error(str(err))

    if args.threads:  # before JAX's CPU client exists: it sizes its thread pool from this
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    torch = _import_torch()
    if torch is None:
        sys.exit("benchmarks.vs_torch compares against PyTorch, which is not installed "
                 "(pip install torch)")
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (args.batch, args.size, args.size)).astype(np.int32)
    jax_images, jax_labels = jnp.asarray(images), jnp.asarray(labels)
    modules = torch_modules(torch)
    if args.profile:
        profile(args.profile, torch, modules, images, labels)
        return
    if args.infer_scaling:
        infer_scaling(args, torch, modules)
        return
    formats = ("channels_last", "nchw") if args.torch_format == "both" else (args.torch_format,)
    torch_sides = [f"torch {f}" for f in formats]

    # (model, side) -> {'train': fn, 'infer': fn}; every fn compiled and warm.
    runs, counts = {}, {}
    for name in args.models:
        model = lapseg_model(name)
        start = time.perf_counter()
        train, infer, counts[(name, "lapseg")], _ = lapseg_steps(name, model, jax_images,
                                                              jax_labels)
        runs[(name, "lapseg")] = {"train": compiled_now(train), "infer": compiled_now(infer)}
        print(f"{name}: lapseg compiled and warm in {time.perf_counter() - start:.0f} s",
              flush=True)
        for side in torch_sides:
            train, infer, counts[(name, side)] = torch_steps(torch, modules, name, model, images,
                                                             labels, side.split()[-1])
            runs[(name, side)] = {"train": compiled_now(train), "infer": compiled_now(infer)}
    if args.ablate:
        for name in args.models:
            for variant, paths in ABLATIONS.items():
                model = conv_lib.WithFastPaths(lapseg_model(name), fast_paths=paths)
                train, infer, _, _ = lapseg_steps(name, model, jax_images, jax_labels)
                runs[(name, f"lapseg [{variant}]")] = {
                    "train": compiled_now(train), "infer": compiled_now(infer)}
            print(f"{name}: ablations compiled", flush=True)

    times = {(key, mode): [] for key in runs for mode in ("train", "infer")}
    for index in range(args.rounds):
        for key, fns in runs.items():
            for mode, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[(key, mode)].append(time.perf_counter() - start)
        print(f"round {index + 1}/{args.rounds} done", flush=True)

    def rate(key, mode):
        return args.batch / statistics.median(times[(key, mode)])

    def spread(key, mode):
        values = times[(key, mode)]
        return max(values) / min(values)

    def paired_ratio(ours, theirs, mode):
        """Median over the rounds of theirs' time / ours' (same round: same load)."""
        return statistics.median(t / o for o, t in zip(times[(ours, mode)], times[(theirs, mode)]))

    load_after = os.getloadavg()
    print(f"\n{jax.devices()[0].platform} x {threads} threads (JAX's CPU client; torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads); "
          f"batch {args.batch} at {args.size}x{args.size}, f32, median of {args.rounds} "
          "interleaved rounds; img/s (max/min time of the rounds); lapseg / torch is the "
          "median of the rounds' time ratios (above 1: lapseg faster); load average "
          f"{load_before[0]:.1f} before compiling, {load_after[0]:.1f} after the rounds")
    header = "| model | mode | lapseg img/s |"
    header += "".join(f" {side} img/s | lapseg / {side} |" for side in torch_sides)
    print(header + " params lapseg" + "".join(f" / {side}" for side in torch_sides) + " |")
    print("|---|---|" + "---:|" * (2 + 2 * len(torch_sides)))
    for (name, side), fns in runs.items():
        if side != "lapseg":
            continue
        params = " / ".join(f"{counts[(name, s)] / 1e6:.2f}M" for s in ["lapseg", *torch_sides])
        for mode in fns:
            ours = rate((name, side), mode)
            row = f"| {name} | {mode} | {ours:.2f} ({spread((name, side), mode):.2f}) |"
            for other in torch_sides:
                theirs = rate((name, other), mode)
                ratio = paired_ratio((name, side), (name, other), mode)
                row += f" {theirs:.2f} ({spread((name, other), mode):.2f}) | {ratio:.2f} |"
            print(row + f" {params} |")
    if args.ablate:
        print("\nlapseg without some fast paths of lapseg.layers.conv (each row adds one; "
              "time relative to lapseg as it is, median of the rounds' ratios)")
        print("| model | variant | train img/s | train time / lapseg's "
              "| infer img/s | infer time / lapseg's |")
        print("|---|---|---:|---:|---:|---:|")
        for (name, side) in runs:
            if not side.startswith("lapseg ["):
                continue
            row = f"| {name} | {side[8:-1]} |"
            for mode in ("train", "infer"):
                ratio = paired_ratio((name, "lapseg"), (name, side), mode)
                row += f" {rate((name, side), mode):.2f} | {ratio:.2f} |"
            print(row)
        print("(lapseg as it is: every path of `lapseg.layers.conv.PATHS`, "
              "i.e. '+ undilated tap grads' + 'shift')")


if __name__ == "__main__":
    main()
