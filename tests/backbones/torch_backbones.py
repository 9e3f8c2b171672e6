"""PyTorch reference backbones for the parity tests (torchvision is not installable here).

`ResNet` copies torchvision's `models/resnet.py` (BasicBlock, Bottleneck,
`_make_layer` with `replace_stride_with_dilation`, the same attribute names, hence the
same state-dict keys) with two additions taken from hszhao/semseg: the deep stem of
`model/resnet.py` (`deep_base`: conv1/bn1, conv2/bn2, conv3/bn3, layer1 from 128
channels) and, for `dilation_mode='deeplab'`, the post-hoc dilation of `model/pspnet.py`
(every 3x3 conv of layer3/layer4 gets rate 2/4 and stride 1, the shortcut stride 1),
extended by DeepLab v3's multi-grid. torchvision's BasicBlock refuses dilation; here it
uses the block's rate on both 3x3 convs (semseg never dilates BasicBlocks).

`VGG16` copies torchvision's `models/vgg.py` (`features`, `classifier`, configuration
"D") with FCN's ceil-mode pooling and optional pad 100, and runs the classifier's Linear
weights as fc6/fc7 convolutions the way FCN convolutionalises them.

Every module returns the features lapseg names, so tests compare them one by one.
"""

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_planes, out_planes, stride=1, dilation=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride, padding=dilation, dilation=dilation,
                     bias=False)  # fmt: skip


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


DEPTHS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


class ResNet(nn.Module):
    def __init__(self, depth, deep_stem=False, output_stride=32, dilation_mode="deeplab",
                 multi_grid=None, num_classes=1000):  # fmt: skip
        super().__init__()
        block, layers = DEPTHS[depth]
        dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
        dilate = dilate[output_stride]
        torchvision_dilation = dilation_mode == "torchvision"
        self.dilation = 1
        if deep_stem:  # semseg model/resnet.py, deep_base=True
            self.inplanes = 128
            self.conv1 = conv3x3(3, 64, stride=2)
            self.bn1 = nn.BatchNorm2d(64)
            self.conv2 = conv3x3(64, 64)
            self.bn2 = nn.BatchNorm2d(64)
            self.conv3 = conv3x3(64, 128)
            self.bn3 = nn.BatchNorm2d(128)
        else:
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
        self.deep_stem = deep_stem
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, torchvision_dilation and dilate[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, torchvision_dilation and dilate[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, torchvision_dilation and dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        if not torchvision_dilation:
            # semseg pspnet.py: dilate layer3 (OS 8) and layer4 (OS 8 and 16) after the fact.
            rates = {32: (1, 1), 16: (1, 2), 8: (2, 4)}[output_stride]
            for layer, rate in zip((self.layer3, self.layer4), rates):
                for index, blk in enumerate(layer):
                    block_rate = rate
                    if layer is self.layer4 and multi_grid is not None:
                        block_rate = rate * multi_grid[index]
                    if block_rate == 1:
                        continue
                    for name, m in blk.named_modules():
                        if name == "conv2" or (name == "conv1" and block is BasicBlock):
                            m.dilation = m.padding = (block_rate, block_rate)
                            if rate > 1:
                                m.stride = (1, 1)
                        elif name == "downsample.0" and rate > 1:
                            m.stride = (1, 1)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, dilation=self.dilation))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        features = {"stem": x}
        x = self.maxpool(x)
        for index, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            features[f"res{index + 2}"] = x
        return features


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]  # fmt: skip
VGG16_FEATURES = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 16: "pool3", 22: "relu4_3",
                  23: "pool4", 29: "relu5_3", 30: "pool5"}  # fmt: skip


class VGG16(nn.Module):
    def __init__(self, pad100=False, num_classes=1000):
        super().__init__()
        layers, in_channels = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                padding = 100 if pad100 and not layers else 1
                layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=padding),
                           nn.ReLU(inplace=True)]  # fmt: skip
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, num_classes),
        )  # fmt: skip
        self.pad100 = pad100

    def forward(self, x):
        features = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG16_FEATURES:
                features[VGG16_FEATURES[index]] = x
        fc6, fc7 = self.classifier[0], self.classifier[3]
        x = F.conv2d(x, fc6.weight.view(4096, 512, 7, 7), fc6.bias, padding=0 if self.pad100 else 3)
        x = F.conv2d(F.relu(x), fc7.weight.view(4096, 4096, 1, 1), fc7.bias)
        features["fc7"] = F.relu(x)
        return features


def randomize_(model, calibration_images=None, seed=0):
    """Random weights *and* BatchNorm statistics/affine, so a wrong mapping cannot pass.

    Convs: He-normal (fan-out); BN affine random around (1, 0). BN running statistics
    are those of `calibration_images` (NCHW; one train-mode pass with cumulative
    averaging), so activations stay O(1) through 100 layers instead of growing
    layer by layer, and every statistic differs from the neutral (0, 1).
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=generator) * std + mean)

    def uniform(t, low, high):
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                normal(m.weight, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    normal(m.bias, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average: one pass sets the batch statistics
                uniform(m.weight, 0.5, 1.5)
                normal(m.bias, 0.1)
        for m in model.modules():
            # The last BN of a residual branch gets a small gain, as in trained ResNets
            # (and zero_init_residual): with gains ~1 a 100-layer random net is chaotic and
            # amplifies float32 rounding differences (5e-4 at ResNet-101's res5).
            last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else None
            if isinstance(m, BasicBlock):
                last_bn = m.bn2
            if last_bn is not None:
                uniform(last_bn.weight, 0.1, 0.4)
            elif isinstance(m, nn.Linear):
                normal(m.weight, (2.0 / m.in_features) ** 0.5)
                normal(m.bias, 0.1)
        if calibration_images is not None:
            model.train()(calibration_images)
    return model.eval()


def state_dict_numpy(model):
    """The state dict as numpy arrays (what `lapseg.backbones.load_torch_weights` takes)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
